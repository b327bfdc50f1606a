"""The batch upscaling of :mod:`.batch` on a ``dask.distributed`` cluster: a task per file, or per block.

``--scheduler`` names the cluster (:class:`Scheduler`): ``local:N`` starts N worker processes on this machine
(a ``LocalCluster``, one task at a time each); an address (``tcp://HOST:PORT``) or a scheduler file joins one
that runs already, such as dask-jobqueue's on SLURM/LSF or dask-cuda's on a multi-GPU node. Workers read the
inputs and write the outputs themselves, so they must see the same file system as this process; the client
sends names and settings and receives names and times, never pixels.

Each task runs :func:`.batch.upscale_file`, the function a single process runs, so the outputs are the same
bits. A worker loads the model once, on its first task, and keeps it for the next ones (:func:`worker_model`;
each load is logged as a :data:`MODEL_LOADED` event on the scheduler). A task that raises is retried
(:data:`RETRIES`); a task whose worker dies is given to another worker by the scheduler, so a lost worker
costs its task, not the run. A task first looks for its output written with the same provenance (by an
attempt that died between writing and reporting), so a recomputed task never writes a second copy.

OME-Zarr outputs spread one image over the cluster, a task per block: :mod:`.distributed_blocks`.

``distributed`` is imported only when a cluster is used: it is the optional ``[distributed]`` extra.
"""

import contextlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import batch
from .errors import InputError, MicrodiskSRError, WeightsError
from .models import REGISTRY, LoadedModel, load_model

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "MODEL_LOADED",
    "RETRIES",
    "Scheduler",
    "cluster_errors",
    "connect",
    "describe",
    "model_loads",
    "upscale_files",
    "worker_model",
]

RETRIES = 2
"""How many times a task that raised is run again (a task whose worker died is rescheduled by dask itself,
up to ``distributed.scheduler.allowed-failures`` times)."""
MODEL_LOADED = "microdisk-sr-model-loaded"
"""The scheduler event topic of model loads on workers (``client.get_events(MODEL_LOADED)``)."""
_PROTOCOLS = ("tcp", "tls", "ucx", "ws", "wss", "inproc")
_HOST_PORT = re.compile(r"^[\w.-]+:\d+$")
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_INSTALL = "pip install 'napari-microdisk-sr[distributed]'"


@dataclass(frozen=True)
class Scheduler:
    """Where the tasks run: exactly one of a local cluster's size, an address, or a scheduler file.

    Attributes
    ----------
    local_workers : int or None
        Start a ``LocalCluster`` of this many worker processes (one task at a time each) for the run.
    address : str or None
        The address of a running scheduler, ``tcp://HOST:PORT`` (or another dask protocol).
    scheduler_file : Path or None
        The JSON file a running scheduler wrote (``dask scheduler --scheduler-file``, dask-jobqueue,
        dask-cuda), which holds its address.
    """

    local_workers: "int | None" = None
    address: "str | None" = None
    scheduler_file: "Path | None" = None

    def __post_init__(self) -> None:
        given = [x for x in (self.local_workers, self.address, self.scheduler_file) if x is not None]
        if len(given) != 1:
            raise InputError("a scheduler is one of: local:N, an address tcp://HOST:PORT, a scheduler file")
        if self.local_workers is not None and (
            not isinstance(self.local_workers, int)
            or isinstance(self.local_workers, bool)
            or self.local_workers < 1
        ):
            raise InputError(f"a local cluster needs 1 or more workers, not {self.local_workers!r}")

    @classmethod
    def parse(cls, text: str) -> "Scheduler":
        """``local:N``, ``PROTOCOL://HOST:PORT``, ``HOST:PORT`` (taken as tcp) or a scheduler file's path.

        Raises
        ------
        InputError
            For anything else, saying which forms are accepted; for a scheduler file that is missing or
            holds no address.
        """
        text = text.strip()
        if text.startswith("local"):
            count = text.removeprefix("local").removeprefix(":")
            if not count.isdigit() or int(count) < 1:
                raise InputError(
                    f"a local cluster is local:N with N worker processes, e.g. local:4; got {text!r}"
                )
            return cls(local_workers=int(count))
        if "://" in text:
            protocol, _, rest = text.partition("://")
            if protocol not in _PROTOCOLS or not rest:
                raise InputError(
                    f"a scheduler address is PROTOCOL://HOST:PORT with PROTOCOL one of "
                    f"{', '.join(_PROTOCOLS)}, e.g. tcp://node12:8786; got {text!r}"
                )
            return cls(address=text)
        path = Path(text)
        if not path.exists() and _HOST_PORT.match(text):
            return cls(address=f"tcp://{text}")
        if not path.is_file():
            raise InputError(
                f"--scheduler {text!r} is not local:N, an address (tcp://HOST:PORT) or an existing "
                "scheduler file (the JSON that `dask scheduler --scheduler-file FILE` writes)"
            )
        try:
            address = json.loads(path.read_text()).get("address")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            address = None
        if not isinstance(address, str):
            raise InputError(f"{path} is not a dask scheduler file: it holds no scheduler address")
        return cls(scheduler_file=path)

    def __str__(self) -> str:
        if self.local_workers is not None:
            return f"local:{self.local_workers}"
        return self.address or str(self.scheduler_file)


@contextlib.contextmanager
def connect(scheduler: Scheduler, *, threads: "int | None" = None) -> Iterator["Client"]:
    """A ``distributed.Client`` of ``scheduler``, closed on exit (with the local cluster it started).

    A local cluster runs each worker in its own process, one task at a time, with ``threads`` torch threads
    (by default an equal share of the machine's cores).

    Raises
    ------
    MicrodiskSRError
        When ``distributed`` is not installed or the scheduler cannot be reached.
    """
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise MicrodiskSRError(f"--scheduler needs dask.distributed ({exc}): {_INSTALL}") from exc
    if scheduler.local_workers is not None:
        count = scheduler.local_workers
        each = str(threads or max(1, _cpu_count() // count))
        # A worker takes its thread counts from this process's environment when it starts (dask's nannies
        # take the environment over their configuration, and put 1 in it). dask also sets
        # MALLOC_TRIM_THRESHOLD_, which stops glibc from keeping the network's large activations in the heap
        # between calls: each becomes a fresh mapping, page-faulted anew (the compact model ran 25 % slower).
        with (
            dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}),
            _environ(dict.fromkeys(_THREAD_VARIABLES, each)),
        ):
            cluster = LocalCluster(
                n_workers=count,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # a free port: several runs at once do not compete for 8787
            )
        with cluster, Client(cluster) as client:
            yield client
        return
    try:
        if scheduler.address is not None:
            client = Client(scheduler.address)
        else:
            client = Client(scheduler_file=str(scheduler.scheduler_file))
    except (OSError, TimeoutError) as exc:
        raise MicrodiskSRError(
            f"cannot reach the dask scheduler {scheduler} ({exc}): is it running, and reachable from here?"
        ) from exc
    with client:
        yield client


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables of this process, and put back what they were on exit."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def describe(client: "Client") -> str:
    """The cluster in words: its workers, how many tasks they run at once, and the scheduler's address."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    tasks = sum(worker["nthreads"] for worker in workers.values())
    return f"{len(workers)} dask worker(s) ({tasks} task(s) at once), scheduler {client.scheduler.address}"


class _ModelSlot:
    """The model a worker process holds: the last one asked for, loaded once and reused by its tasks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str, str] | None = None
        self._model: LoadedModel | None = None

    def get(self, source: str, sha256: str) -> LoadedModel:
        with self._lock:
            if self._model is None or self._key != (source, sha256):
                self._model = self._key = None  # the old network is freed before the new one loads
                started = time.perf_counter()
                model = load_model(source)
                if model.sha256 != sha256:
                    raise WeightsError(
                        f"{source} on this worker holds other weights (SHA-256 {model.sha256[:12]}...) than "
                        f"the run was started with ({sha256[:12]}...): give workers the same file"
                    )
                self._model, self._key = model, (source, sha256)
                _log_load(model, time.perf_counter() - started)
            return self._model


_SLOT = _ModelSlot()


def worker_model(source: str, sha256: str) -> LoadedModel:
    """The model ``source`` (a registry name or an absolute path) in this worker process, loaded on first
    use and reused while the same weights are asked for.

    Raises
    ------
    WeightsError
        When the weights cannot be loaded, or their SHA-256 is not ``sha256`` (the worker sees another file).
    """
    return _SLOT.get(source, sha256)


def _log_load(model: LoadedModel, seconds: float) -> None:
    """Record a model load as a :data:`MODEL_LOADED` event on the scheduler (when in a worker)."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not in a worker
        return
    record = {"worker": worker.address, "pid": os.getpid(), "model": model.name, "sha256": model.sha256}
    worker.log_event(MODEL_LOADED, record | {"seconds": seconds})


def model_loads(client: "Client", since: float = 0.0) -> list[dict[str, Any]]:
    """The model loads of the workers (one record per load: ``worker``, ``pid``, ``model``, ``sha256``,
    ``seconds``) logged at or after the time ``since`` (``time.time()``)."""
    return [record for stamp, record in client.get_events(MODEL_LOADED) if stamp >= since]


def _upscale_task(job: batch.FileJob, source: str, sha256: str, redo: bool) -> batch.FileDone:
    """On a worker: one file, unless an earlier attempt of this task wrote it already."""
    if not redo:
        found = batch.is_done(job)
        if found is not None:
            return batch.FileDone(job.path, found)
    return batch.upscale_file(job, worker_model(source, sha256))


def _check_task(job: batch.FileJob) -> "str | None":
    """On a worker: why the input of ``job`` cannot be upscaled, or None."""
    try:
        batch.check_input(job.path, job.config.intensity, job.region)
    except InputError as exc:
        return str(exc)
    return None


def upscale_files(
    client: "Client",
    jobs: Sequence[batch.FileJob],
    model: str,
    sha256: str,
    *,
    redo: bool = False,
) -> Generator[batch.FileDone, None, list[batch.FileDone]]:
    """Upscale the inputs of ``jobs`` on the cluster of ``client``, as a job generator.

    First every input is checked on the workers, and nothing is computed when one cannot be upscaled;
    then each job is a task, retried when it raises (:data:`RETRIES`) and recomputed elsewhere when its
    worker dies. Paths are made absolute here, as workers may run in other folders.

    Parameters
    ----------
    client : distributed.Client
    jobs : sequence of FileJob
        What to compute (the skip rule already applied).
    model : str
        A registry name or a weights file that every worker can read.
    sha256 : str
        The SHA-256 of the weights (``LoadedModel.sha256``): a worker that finds other weights refuses.
    redo : bool
        Compute even inputs whose output a worker finds written (``--redo``); a task recomputed after its
        worker died between writing and reporting then writes a numbered second copy.

    Yields
    ------
    FileDone
        For each job, in the order they finish.

    Returns
    -------
    list of FileDone
        In the order of ``jobs``.

    Raises
    ------
    InputError
        For inputs that cannot be upscaled (before any is computed).
    MicrodiskSRError
        When a task fails for good (the message names the input) or the cluster goes away; outputs
        written so far stay, and a rerun skips them.
    """
    from distributed import as_completed

    located = [replace(job, path=job.path.absolute(), target=job.target.absolute()) for job in jobs]
    source = model if model in REGISTRY else str(Path(model).absolute())
    run = uuid.uuid4().hex[:8]
    problems = _problems(client, located, run)
    if problems:
        raise InputError("; ".join(problems))
    pending = {
        client.submit(
            _upscale_task,
            job,
            source,
            sha256,
            redo,
            key=f"upscale-{job.path.name}-{run}-{i}",
            retries=RETRIES,
        ): i
        for i, job in enumerate(located)
    }
    results: list[batch.FileDone | None] = [None] * len(jobs)
    try:
        with cluster_errors():
            for future in as_completed(list(pending)):
                i = pending.pop(future)
                try:
                    done = future.result()
                except MicrodiskSRError as exc:
                    raise type(exc)(f"{jobs[i].path}: {exc}") from exc
                future.release()  # the cluster forgets it: a worker lost later does not compute it again
                output = jobs[i].target.parent / done.output.name  # named as the caller named the folder
                results[i] = replace(done, path=jobs[i].path, output=output)
                yield results[i]
    finally:
        if pending and client.status == "running":
            client.cancel(list(pending))
    return [done for done in results if done is not None]


def _problems(client: "Client", jobs: Sequence[batch.FileJob], run: str) -> list[str]:
    """Why inputs of ``jobs`` cannot be upscaled, checked on the workers (which read them)."""
    with cluster_errors():
        checks = [
            client.submit(_check_task, job, key=f"check-{job.path.name}-{run}-{i}", retries=RETRIES)
            for i, job in enumerate(jobs)
        ]
        return [problem for problem in client.gather(checks) if problem is not None]


@contextlib.contextmanager
def cluster_errors() -> Iterator[None]:
    """Turn a task that killed its workers, or a lost cluster, into a :class:`MicrodiskSRError` that says
    what to do."""
    from distributed.client import FutureCancelledError
    from distributed.comm import CommClosedError
    from distributed.scheduler import KilledWorker

    rerun = "run the same command again: outputs already written are skipped"
    try:
        yield
    except KilledWorker as exc:
        raise MicrodiskSRError(
            f"a task killed every worker that ran it ({exc}): out of memory? Use a smaller --tile; {rerun}"
        ) from exc
    except (CommClosedError, FutureCancelledError) as exc:
        raise MicrodiskSRError(f"lost the dask cluster ({type(exc).__name__}: {exc}); {rerun}") from exc
