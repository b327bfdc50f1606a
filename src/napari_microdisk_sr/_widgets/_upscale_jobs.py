"""The jobs Super-resolve runs in its worker on whole layers: upscale in memory and write TIFFs beside the
files, or upscale block by block into OME-Zarr stores and open them lazily."""

import dataclasses
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core import infer, lazy, ome_zarr
from ..core.consistency import lr_consistency
from ..core.device import resolve_device
from ..core.intensity import Intensity
from ..core.io import (
    PixelSize,
    ensure_writable_dir,
    image_stem,
    numbered_paths,
    output_dir_for,
    write_tiff,
)
from ..core.model_cache import ModelCache
from ..core.outputs import safe_name
from ..core.progress import StopFlag
from ._sources import Source

__all__ = ["Status", "Upscaled", "upscale_layers", "upscale_layers_to_ome_zarr"]


@dataclass(frozen=True)
class Status:
    """What the worker is doing now, for the status line."""

    text: str


@dataclass(frozen=True, eq=False)
class Upscaled:
    """A finished output: the array, its layer name and its provenance."""

    source: Source
    data: "np.ndarray | list[Any]"  # an array, or the levels of an OME-Zarr result (dask arrays)
    name: str
    scale: int
    provenance: dict[str, Any]
    consistency: "np.ndarray | None" = None  # |degrade(SR) - LR| at the input's size, fractions of the range


def upscale_layers(
    sources: list[Source],
    models: ModelCache,
    model_ref: "str | Path",
    config: infer.UpscaleConfig,
    stop: StopFlag,
    consistency: bool = False,
) -> Generator[Any, None, int]:
    """The job: load the model (or reuse the last one), upscale each source (and check its LR consistency),
    write it beside its file; return how many finished."""
    for source in sources:
        if source.path is not None:
            ensure_writable_dir(output_dir_for(source.path))
    yield Status(f"loading model {model_ref}")
    model = models.load(model_ref)  # on the CPU; its copy on the device is kept for the next job
    device = resolve_device(config.device)
    factor = model.spec.scale
    for index, source in enumerate(sources):
        yield Status(f"{index + 1}/{len(sources)}: upscaling {source.name!r} with {model.name}")
        job = infer.upscale(
            source.data,
            model,
            tile=config.tile,
            device=device,
            half=config.half,
            intensity=config.intensity,
            stop=stop,
            rgb=source.rgb,
        )
        result = yield from job
        if result is None:
            return index
        provenance = result.provenance | {
            "input_layer": source.name,
            "input_path": None if source.path is None else str(source.path),
            "output_path": None,
        }
        check = None
        if consistency:
            used = Intensity.parse(result.provenance["intensity"])
            check = lr_consistency(result.image, source.data, intensity=used)
            provenance |= check.provenance()
        if source.path is not None:  # the file's name is taken when it is written: two writers never clash
            base = output_dir_for(source.path) / f"{source.path.stem}_x{factor}_{safe_name(model.name)}.tif"
            pixel_size = None if source.pixel_size is None else source.pixel_size.scaled(1 / factor)
            written = write_tiff(
                base, result.image, pixel_size=pixel_size, description=provenance, names=numbered_paths(base)
            )
            provenance = provenance | {"output_path": str(written)}
            if check is not None:
                map_path = written.with_name(f"{written.stem}_consistency.tif")
                write_tiff(
                    map_path,
                    check.map,
                    pixel_size=source.pixel_size,
                    description=check.provenance() | {"sr": str(written)},
                    names=numbered_paths(map_path),
                )
        name = f"{source.name}_x{factor} ({model.name})"
        yield Upscaled(source, result.image, name, factor, provenance, None if check is None else check.map)
    return len(sources)


def upscale_layers_to_ome_zarr(
    sources: list[Source],
    models: ModelCache,
    model_ref: "str | Path",
    config: infer.UpscaleConfig,
    stop: StopFlag,
) -> Generator[Any, None, int]:
    """The OME-Zarr job: each source, read block by block, into a store beside its file, opened lazily."""
    for source in sources:
        ensure_writable_dir(output_dir_for(source.path))
    yield Status(f"loading model {model_ref}")
    model = models.load(model_ref)
    factor = model.spec.scale
    for index, source in enumerate(sources):
        yield Status(f"{index + 1}/{len(sources)}: {source.name!r} into OME-Zarr with {model.name}")
        image = lazy.lazy_image(
            source.data, rgb=source.rgb, pixel_size=source.pixel_size, origin=_origin(source)
        )
        image = dataclasses.replace(image, lead_geometry=_lead_geometry(source, image.axes))
        target = (
            output_dir_for(source.path)
            / f"{image_stem(source.path)}_x{factor}_{safe_name(model.name)}.ome.zarr"
        )
        record = {"input_layer": source.name, "input_path": str(source.path)}
        result = yield from ome_zarr.upscale_to_ome_zarr(
            image, model, target, config=config, record=record, stop=stop
        )
        if result is None:
            return index
        levels = lazy.open_pyramid(result.path).levels
        provenance = result.provenance | {"output_path": str(result.path)}
        yield Upscaled(source, levels, f"{source.name}_x{factor} ({model.name})", factor, provenance)
    return len(sources)


def _origin(source: Source) -> tuple[float, float]:
    """Where the layer's pixel (0, 0) lies along y and x, in its pixel size's unit (the layer's translate is
    in its scale's)."""
    size = source.pixel_size or PixelSize(1.0, 1.0)
    (ty, tx), (sy, sx) = source.translate[-2:], source.scale[-2:]
    return (float(ty) / float(sy) * size.y, float(tx) / float(sx) * size.x)


def _lead_geometry(source: Source, axes: tuple[str, ...]) -> dict[str, lazy.AxisGeometry]:
    """The layer's spacing, origin and unit along its leading axes (named ``axes``, as the store names them),
    so that its store lies where the layer does along z and t too."""
    lead = len(source.scale) - 2  # an RGB layer's scale has no channel axis
    return {
        axis: lazy.AxisGeometry(float(scale), float(translate), "" if str(unit) == "pixel" else str(unit))
        for axis, scale, translate, unit in zip(
            axes[:lead], source.scale, source.translate, source.units, strict=False
        )
    }
