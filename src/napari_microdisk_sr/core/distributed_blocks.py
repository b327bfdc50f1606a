"""OME-Zarr outputs on a ``dask.distributed`` cluster: one image spread over the workers, a task per block.

Each block of each plane is a task running :func:`.ome_zarr.upscale_block` (the function a single process
runs, so the stores hold the same bits), and each block of each pyramid level a task that waits for the blocks
it averages; the store is put in place when its last block is written. Each task marks its block done in
the store, so a rerun after the client was killed submits only the blocks not marked (see
:mod:`.unfinished`). The cluster itself, the model each worker keeps and the retries are
:mod:`.distributed`'s.
"""

import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import batch, infer, lazy, ome_zarr, unfinished
from .distributed import RETRIES, cluster_errors, worker_model
from .errors import InputError
from .images import Normalization
from .intensity import Intensity
from .models import REGISTRY

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = ["BlockProgress", "upscale_stores"]


@dataclass(frozen=True)
class BlockProgress:
    """Progress of :func:`upscale_stores`: blocks done (upscaled, or averaged into a pyramid level) of all
    inputs, and the store an input's last block completed.

    Attributes
    ----------
    done, total : int
    finished : (Path, OmeZarrResult) or None
        The input whose store was just completed and put in place, and what was written.
    """

    done: int
    total: int
    finished: "tuple[Path, ome_zarr.OmeZarrResult] | None" = None


def _norms_task(
    path: Path, intensity: "Intensity | None"
) -> "tuple[tuple[Normalization, Normalization | None] | None, str | None]":
    """On a worker: the whole image's value mapping (reading it chunk by chunk here, where needed), or
    why it cannot be upscaled."""
    import dask

    try:
        with dask.config.set(scheduler="synchronous"):  # this worker reads; no tasks within a task
            return lazy.lazy_normalizations(lazy.open_lazy(path), intensity=intensity), None
    except InputError as exc:
        return None, f"{path}: {exc}"


def _block_task(
    path: Path,
    store: str,
    step: ome_zarr.BlockStep,
    source: str,
    sha256: str,
    norms: "tuple[Normalization, Normalization | None]",
    config: infer.UpscaleConfig,
) -> None:
    """On a worker: one block of one plane into level 0 of ``store`` (the input is opened here, by path),
    then its marker."""
    model = worker_model(source, sha256)
    image = lazy.open_lazy(path)
    made_with = ome_zarr.upscale_block(image, store, step.plane, step.region, model, norms, config=config)
    unfinished.mark_done(store, step.name, made_with)


def _pyramid_task(store: str, step: ome_zarr.BlockStep, index: tuple[Any, ...], _after: list[Any]) -> None:
    """On a worker: one block of a pyramid level, once the blocks of the level below it reads are written,
    then its marker."""
    ome_zarr.downsample_block(store, step.level, index, step.region)
    unfinished.mark_done(store, step.name)


@dataclass
class _Store:
    """One input's OME-Zarr output being written on the cluster.

    Attributes
    ----------
    claim : unfinished.Claim
        The temporary store, and its lock.
    shapes : list of tuple of int
    steps : list of ome_zarr.BlockStep
        Every block of the store.
    left : int
        Its blocks submitted and not yet written.
    reused : int
        Its blocks found written by an interrupted run.
    """

    claim: unfinished.Claim
    shapes: list[tuple[int, ...]]
    steps: list[ome_zarr.BlockStep]
    left: int
    reused: int


def upscale_stores(
    client: "Client",
    jobs: Sequence[batch.FileJob],
    model: str,
    sha256: str,
    *,
    resume: bool = True,
) -> Generator[BlockProgress, None, list[ome_zarr.OmeZarrResult]]:
    """Upscale the inputs of ``jobs`` into OME-Zarr images on the cluster of ``client``, a task per block.

    The inputs' value mappings are computed on the workers first (nothing is computed when one cannot be
    upscaled). Each output store is created here (metadata only) in a hidden folder beside its target, or an
    interrupted run's store of the same input, weights and settings is taken over (see
    :func:`.ome_zarr.open_store`). Each of its blocks not yet written is a task: a block of a plane runs
    :func:`.ome_zarr.upscale_block` (the function a single process runs, so the stores hold the same bits), a
    block of a pyramid level waits for the blocks it averages. When an input's last block is written its
    store gets its provenance and is put in place (:func:`.ome_zarr.finish_store`). Tasks are retried
    (:data:`.distributed.RETRIES`) and recomputed when their worker dies (a block writes the same values
    again). Workers open the inputs by path, so they must see them.

    Parameters
    ----------
    client : distributed.Client
    jobs : sequence of FileJob
        Inputs and ``<stem>_x4.ome.zarr`` targets (the skip rule already applied).
    model, sha256
        As for :func:`.distributed.upscale_files`.
    resume : bool
        Take over interrupted stores of the same jobs; False deletes them and starts new ones (``--redo``).

    Yields
    ------
    BlockProgress
        After each block, for all inputs together.

    Returns
    -------
    list of OmeZarrResult
        In the order of ``jobs``.

    Raises
    ------
    InputError
        For inputs that cannot be upscaled (before any is computed).
    MicrodiskSRError
        When a task fails for good or the cluster goes away; finished stores stay, and a rerun skips them;
        unfinished ones stay hidden, and a rerun resumes them (where the inputs are identified).
    """
    from distributed import as_completed

    located = [replace(job, path=job.path.absolute(), target=job.target.absolute()) for job in jobs]
    source = model if model in REGISTRY else str(Path(model).absolute())
    run = uuid.uuid4().hex[:8]
    with cluster_errors():
        checks = [
            client.submit(
                _norms_task, job.path, job.config.intensity, key=f"norms-{i}-{run}", retries=RETRIES
            )
            for i, job in enumerate(located)
        ]
        found = client.gather(checks)
    problems = [problem for _, problem in found if problem is not None]
    if problems:
        raise InputError("; ".join(problems))
    pending: dict[Future, int] = {}
    stores: list[_Store] = []
    results: list[ome_zarr.OmeZarrResult | None] = [None] * len(jobs)
    published: set[int] = set()
    try:
        for i, (job, (norms, _)) in enumerate(zip(located, found, strict=True)):
            stores.append(_submit_store(client, i, job, norms, source, sha256, pending, run, resume))
        total = sum(len(store.steps) for store in stores)
        done = sum(store.reused for store in stores)
        for i, store in enumerate(stores):
            if store.left == 0:  # every block was written before an interruption
                results[i] = _finish(store, jobs[i])
                published.add(i)
                yield BlockProgress(done, total, (jobs[i].path, results[i]))
        with cluster_errors():
            for future in as_completed(list(pending)):
                i = pending.pop(future)
                future.result()  # raises what the task raised
                future.release()
                done += 1
                stores[i].left -= 1
                finished = None
                if stores[i].left == 0:
                    results[i] = _finish(stores[i], jobs[i])
                    published.add(i)
                    finished = (jobs[i].path, results[i])
                yield BlockProgress(done, total, finished)
    finally:
        if pending and client.status == "running":
            client.cancel(list(pending))
        for i, store in enumerate(stores):
            if i not in published:
                ome_zarr.leave_unfinished(store.claim)
            store.claim.release()
    return [result for result in results if result is not None]


def _submit_store(
    client: "Client",
    number: int,
    job: batch.FileJob,
    norms: "tuple[Normalization, Normalization | None]",
    source: str,
    sha256: str,
    pending: "dict[Future, int]",
    run: str,
    resume: bool,
) -> _Store:
    """Open the store of ``job`` (an interrupted one of the same record, else a new one in a hidden folder)
    and submit the tasks of its blocks not yet written (into ``pending``, mapped to ``number``)."""
    image = lazy.open_lazy(job.path)
    scale = job.made_with["scale"]
    shapes = ome_zarr.level_shapes(image, scale=scale)
    start = unfinished.start_record(
        job.made_with, _record(job), norms, block=ome_zarr.BLOCK, levels=len(shapes)
    )
    claim = ome_zarr.open_store(
        job.target, image, scale=scale, block=ome_zarr.BLOCK, levels=None, start=start, resume=resume
    )
    tmp = str(claim.path)
    steps = ome_zarr.block_steps(image, shapes, block=ome_zarr.BLOCK, scale=scale)
    written = unfinished.done_blocks(tmp)
    futures: dict[str, Future] = {}
    for step in steps:
        if step.name in written:
            continue
        key = f"block-{job.path.name}-{step.name}-{run}"
        if step.level == 0:
            futures[step.name] = client.submit(
                _block_task, job.path, tmp, step, source, sha256, norms, job.config, key=key, retries=RETRIES
            )
        else:
            index = ome_zarr.store_index(image, step.plane, slice(None), slice(None))[:-2]
            after = [futures[name] for name in step.sources() if name in futures]
            futures[step.name] = client.submit(
                _pyramid_task, tmp, step, index, after, key=key, retries=RETRIES
            )
    pending.update(dict.fromkeys(futures.values(), number))
    return _Store(claim, shapes, steps, len(futures), len(steps) - len(futures))


def _record(job: batch.FileJob) -> dict[str, Any]:
    """The input's provenance: its path and identity."""
    return {"input_path": str(job.path.resolve())} | {
        key: value for key, value in job.made_with.items() if key.startswith("input")
    }


def _finish(store: _Store, job: batch.FileJob) -> ome_zarr.OmeZarrResult:
    """Record the provenance of a complete store and put it in place."""
    last = [step for step in store.steps if step.level == 0][-1]
    made_with = unfinished.read_mark(store.claim.path, last.name)
    provenance = made_with | {"block": ome_zarr.BLOCK, "levels": len(store.shapes)} | _record(job)
    path = ome_zarr.finish_store(store.claim.path, job.target, provenance)
    return ome_zarr.OmeZarrResult(job.target.parent / path.name, store.shapes, provenance, store.reused)
