"""Data-parallel fine-tuning: the processes of a ``torchrun`` launch training one run together.

``torchrun --nproc_per_node N -m napari_microdisk_sr.cli finetune ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. :func:`join` sets up their process group (gloo on
CPUs, NCCL on CUDA GPUs, each process on the GPU of its ``LOCAL_RANK``) and gives each its :class:`Ranks`:

- the batch size is per process and every step trains on a global batch of ``N * batch`` pairs: the pairs
  one process with a batch of ``N * batch`` would draw (the pair sampler is a pure function of seed, epoch
  and index), each process taking its contiguous part (``PairSampler.batches(..., part=(rank, N))``);
- each process's loss is its share of the global batch's mean L1, so the gradients that
  ``DistributedDataParallel`` averages are the single process's gradient of the global batch;
- validation is split the same way and summed across the processes;
- the stop flag and the time budget are agreed at every step (:meth:`Ranks.most`), so every process stops
  after the same step;
- only rank 0 writes the run folder.

When a process fails, its peers stop too: the collective they wait in fails as soon as the failed process's
connections close (gloo), and ``torchrun``'s agent ends the others when one exits with an error (NCCL as
well). A process that hangs without failing holds the others until the process group's timeout.
"""

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..device import resolve_device
from ..errors import InputError
from .config import FineTuneConfig

__all__ = [
    "Ranks",
    "describe_processes",
    "end_process",
    "join",
    "process_batch",
    "process_count",
    "process_rank",
]

_GPU_BATCH, _CPU_BATCH = 4, 2


@dataclass(frozen=True, eq=False)
class Ranks:
    """This process's place among the processes of a run, and its device; one process by default.

    Attributes
    ----------
    rank, size : int
        The process's rank and the number of processes (1: an ordinary run, no collectives).
    device : torch.device
        Where this process trains.
    control : ProcessGroup or None
        The gloo group of the small CPU messages (the default group on CPUs).
    """

    device: torch.device
    rank: int = 0
    size: int = 1
    control: Any = None

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files and reports to people (rank 0)."""
        return self.rank == 0

    def part(self, count: int) -> slice:
        """This process's contiguous part of ``count`` items: the parts differ in size by one at most, in
        rank order (a process may get none)."""
        return slice(self.rank * count // self.size, (self.rank + 1) * count // self.size)

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` as it trains: in ``DistributedDataParallel`` (which starts every process from rank
        0's weights) when there are several processes."""
        if self.size == 1:
            return module
        device_ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the processes, in place (on its device); returns it."""
        if self.size > 1:
            dist.all_reduce(tensor)
        return tensor

    def most(self, value: int) -> int:
        """The largest of the processes' ``value`` (every process gets the same answer)."""
        if self.size == 1:
            return value
        flag = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.control)
        return int(flag.item())

    def wait(self) -> None:
        """Return once every process has come here."""
        self.most(0)


def process_batch(config: FineTuneConfig, ranks: Ranks) -> int:
    """The batch size of each process for a new run: the configuration's, or 4 on a GPU and 2 on the CPU
    (fewer if an epoch has fewer pairs than the processes' steps would take).

    Raises
    ------
    InputError
        If a step of all the processes would take more pairs than an epoch has.
    """
    batch = config.batch_size
    if batch is None:
        usual = _CPU_BATCH if ranks.device.type == "cpu" else _GPU_BATCH
        batch = max(1, min(usual, config.pairs_per_epoch // ranks.size))
    if batch * ranks.size > config.pairs_per_epoch:
        raise InputError(
            f"a step of {ranks.size} processes with batch {batch} takes {batch * ranks.size} pairs, more "
            f"than the {config.pairs_per_epoch} pairs of an epoch; lower batch_size, raise pairs_per_epoch "
            "or start fewer processes"
        )
    return batch


def describe_processes(ranks: Ranks, batch: int) -> str:
    """How the run's processes train together, in words ("" for one process)."""
    if ranks.size == 1:
        return ""
    return f", in each of {ranks.size} processes ({batch * ranks.size} pairs a step)"


def process_rank() -> int:
    """This process's rank in a data-parallel run (its process group, else ``torchrun``'s ``RANK``); 0 for
    an ordinary run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if _launched() else 0


def process_count() -> int:
    """The number of processes of a data-parallel run (its process group's, else ``torchrun``'s
    ``WORLD_SIZE``); 1 for an ordinary run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def _launched() -> bool:
    """Whether ``torchrun`` started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def join(device_name: str) -> Iterator[Ranks]:
    """This process's :class:`Ranks`: in the process group of a ``torchrun`` launch, set up here and taken
    down on exit (or in one already set up, left as it is), else alone.

    Parameters
    ----------
    device_name : str
        The run's device (see :func:`~..device.resolve_device`). With several processes: ``"cpu"``,
        ``"cuda"`` (each process on ``cuda:LOCAL_RANK``) or ``"auto"`` (CUDA if present, else the CPU).

    Raises
    ------
    InputError
        With several processes, for a device other than the CPU or CUDA, a numbered GPU, or fewer GPUs
        than processes on this machine.

    Notes
    -----
    Drop the modules wrapped by :meth:`Ranks.wrap` before leaving: a ``DistributedDataParallel`` still alive
    when the group is destroyed is freed as the interpreter exits, where gloo may abort the process
    ("terminate called without an active exception", exit code -6) after a run that went well.
    """
    if not (dist.is_available() and dist.is_initialized()) and not _launched():
        yield Ranks(resolve_device(device_name))
        return
    device = _process_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
    created = not dist.is_initialized()
    if created:
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    try:
        control = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
        yield Ranks(device, dist.get_rank(), dist.get_world_size(), control)
    finally:
        if created:
            dist.destroy_process_group()


def end_process(code: int) -> NoReturn:
    """End this process of a torchrun launch with ``code`` now, its output flushed, without the
    interpreter's finalisation: gloo's threads can abort a process as the interpreter is torn down
    ("terminate called without an active exception", exit code -6; see pytorch/pytorch#179291) after a run
    whose files are all written. Call it once the process group is destroyed."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _process_device(name: str, local_rank: int) -> torch.device:
    if name.strip().lower().startswith("cuda:"):
        raise InputError(
            f"device {name!r}: under torchrun each process trains on the GPU of its LOCAL_RANK; give "
            "--device cuda (choose the GPUs with CUDA_VISIBLE_DEVICES)"
        )
    device = resolve_device(name)
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise InputError(
            f"data-parallel fine-tuning runs on CPUs or CUDA GPUs, not {device.type}; give --device cpu"
        )
    if local_rank >= torch.cuda.device_count():
        raise InputError(
            f"process {local_rank} of this machine has no GPU of its own ({torch.cuda.device_count()} "
            "visible); start at most one process per GPU (--nproc_per_node)"
        )
    return torch.device("cuda", local_rank)
