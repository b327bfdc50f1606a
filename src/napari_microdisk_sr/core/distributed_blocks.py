"""OME-Zarr outputs on a ``dask.distributed`` cluster: one image spread over the workers, a task per block.

Each block of each plane is a task running :func:`.ome_zarr.upscale_block` (the function a single process
runs, so the stores hold the same bits), and each block of each pyramid level a task that waits for the blocks
it averages; the store is put in place when its last block is written. The cluster itself, the model each
worker keeps and the retries are :mod:`.distributed`'s.
"""

import shutil
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import batch, infer, lazy, ome_zarr
from .distributed import RETRIES, cluster_errors, worker_model
from .errors import InputError
from .images import Normalization
from .intensity import Intensity
from .models import REGISTRY
from .regions import Region

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
    plane: tuple[int, ...],
    block: Region,
    source: str,
    sha256: str,
    norms: "tuple[Normalization, Normalization | None]",
    config: infer.UpscaleConfig,
) -> dict[str, Any]:
    """On a worker: one block of one plane into level 0 of ``store`` (the input is opened here, by path)."""
    model = worker_model(source, sha256)
    return ome_zarr.upscale_block(lazy.open_lazy(path), store, plane, block, model, norms, config=config)


def _pyramid_task(store: str, level: int, index: tuple[Any, ...], block: Region, _after: list[Any]) -> None:
    """On a worker: one block of a pyramid level, once the blocks of the level below it read are written."""
    ome_zarr.downsample_block(store, level, index, block)


@dataclass
class _Store:
    """One input's OME-Zarr output being written on the cluster."""

    job: batch.FileJob
    tmp: Path
    shapes: list[tuple[int, ...]]
    left: int
    last_block: "Future"


def upscale_stores(
    client: "Client",
    jobs: Sequence[batch.FileJob],
    model: str,
    sha256: str,
) -> Generator[BlockProgress, None, list[ome_zarr.OmeZarrResult]]:
    """Upscale the inputs of ``jobs`` into OME-Zarr images on the cluster of ``client``, a task per block.

    The inputs' value mappings are computed on the workers first (nothing is computed when one cannot be
    upscaled). Each output store is created here (metadata only) in a hidden folder beside its target; each
    block of each plane is a task (:func:`.ome_zarr.upscale_block`, the function a single process runs, so
    the stores hold the same bits), and each block of each pyramid level a task that waits for the blocks
    it averages. When an input's last block is written its store gets its provenance and is put in place
    (:func:`.ome_zarr.finish_store`). Tasks are retried (:data:`.distributed.RETRIES`) and recomputed when
    their worker dies (a block writes the same values again). Workers open the inputs by path, so they must
    see them.

    Parameters
    ----------
    client : distributed.Client
    jobs : sequence of FileJob
        Inputs and ``<stem>_x4.ome.zarr`` targets (the skip rule already applied).
    model, sha256
        As for :func:`.distributed.upscale_files`.

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
        When a task fails for good or the cluster goes away; unfinished stores are removed, finished ones
        stay, and a rerun skips them.
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
    try:
        for i, (job, (norms, _)) in enumerate(zip(located, found, strict=True)):
            stores.append(_submit_store(client, i, job, norms, source, sha256, pending, run))
        total, done = len(pending), 0
        with cluster_errors():
            for future in as_completed(list(pending)):
                i = pending.pop(future)
                future.result()  # raises what the task raised
                if future is not stores[i].last_block:
                    future.release()
                done += 1
                stores[i].left -= 1
                finished = None
                if stores[i].left == 0:
                    results[i] = _finish(stores[i], jobs[i])
                    finished = (jobs[i].path, results[i])
                yield BlockProgress(done, total, finished)
    finally:
        if pending and client.status == "running":
            client.cancel(list(pending))
        for store in stores:
            shutil.rmtree(store.tmp, ignore_errors=True)  # gone already where it was put in place
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
) -> _Store:
    """Create the store of ``job`` in a hidden folder and submit its block and pyramid tasks (into
    ``pending``, mapped to ``number``)."""
    image = lazy.open_lazy(job.path)
    scale = job.made_with["scale"]
    tmp = ome_zarr.temporary_store(job.target)
    shapes = ome_zarr.create_store(str(tmp), image, scale=scale, name=job.target.name)
    side, chunk = ome_zarr.BLOCK, ome_zarr.BLOCK * scale
    left, last = 0, None
    for p, plane in enumerate(image.layout.plane_indices()):
        below = {}
        for block in ome_zarr.block_regions(image.layout.height, image.layout.width, side):
            key = f"block-{job.path.name}-{p}-{block.y0}-{block.x0}-{run}"
            last = client.submit(
                _block_task, job.path, str(tmp), plane, block, source, sha256, norms, job.config,
                key=key, retries=RETRIES,
            )  # fmt: skip
            below[block.y0 // side, block.x0 // side] = last
        index = ome_zarr.store_index(image, plane, slice(None), slice(None))[:-2]
        left += len(below)
        pending.update(dict.fromkeys(below.values(), number))
        for level, shape in enumerate(shapes[1:], 1):
            level_blocks = {}
            for block in ome_zarr.block_regions(*shape[-2:], chunk):
                r, c = block.y0 // chunk, block.x0 // chunk
                after = [below[k] for k in ((2 * r, 2 * c), (2 * r, 2 * c + 1), (2 * r + 1, 2 * c),
                                            (2 * r + 1, 2 * c + 1)) if k in below]  # fmt: skip
                key = f"pyramid-{job.path.name}-{p}-{level}-{block.y0}-{block.x0}-{run}"
                level_blocks[r, c] = client.submit(
                    _pyramid_task, str(tmp), level, index, block, after, key=key, retries=RETRIES
                )
            left += len(level_blocks)
            pending.update(dict.fromkeys(level_blocks.values(), number))
            below = level_blocks
    return _Store(job, tmp, shapes, left, last)


def _finish(store: _Store, job: batch.FileJob) -> ome_zarr.OmeZarrResult:
    """Record the provenance of a complete store and put it in place."""
    made_with = store.last_block.result()
    store.last_block.release()
    record = {"input_path": str(job.path.resolve())} | {
        key: value for key, value in job.made_with.items() if key.startswith("input")
    }
    provenance = made_with | {"block": ome_zarr.BLOCK, "levels": len(store.shapes)} | record
    path = ome_zarr.finish_store(store.tmp, store.job.target, provenance)
    return ome_zarr.OmeZarrResult(job.target.parent / path.name, store.shapes, provenance)
