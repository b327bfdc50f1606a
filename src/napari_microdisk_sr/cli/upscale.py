"""``microdisk-sr upscale``: super-resolve images x4 into TIFFs, or block by block into OME-Zarr; never
overwriting."""

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from ..core import batch, infer, io, lazy, ome_zarr
from ..core.consistency import AREA, read_profile
from ..core.consistency import lr_consistency as measure_consistency
from ..core.device import DEVICE_CHOICES, describe_device, half_dtype, resolve_device
from ..core.errors import InputError
from ..core.images import Normalization, image_layout, normalizations_for, validate_image
from ..core.models import DEFAULT_MODEL, REGISTRY, LoadedModel, load_model
from ..core.progress import drive
from ..core.regions import Region
from ..core.weights import file_sha256


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "upscale",
        help="super-resolve images x4 into TIFFs",
        description=(
            "Super-resolve each INPUT (TIFF, PNG, JPEG; gray, RGB or RGBA; T/Z stacks plane by plane) "
            "with a model and write <stem>_x4.tif with the input's dtype and value range, and its pixel "
            "size divided by 4. Outputs go into --out, by default into <stem>_microdisk_sr/ beside each "
            "input; an existing file is never overwritten (-1, -2, ... is added). All inputs and the output "
            "folders are checked before any work starts. A rerun skips every input whose output is already "
            "there with the same provenance (input and weights SHA-256, settings). With --format ome-zarr, "
            "inputs are read lazily (Zarr stores, TIFFs by tile) and each result is written block by block "
            "into <stem>_x4.ome.zarr with a pyramid: memory is bounded by the block, not the image."
        ),
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, Zarr stores (.zarr, .ome.zarr), folders (their images, not recursive) or quoted "
        "patterns ('plate/*.tif')",
    )
    parser.add_argument(
        "--format",
        choices=("tiff", "ome-zarr"),
        default="tiff",
        help="tiff: <stem>_x4.tif, computed in memory; ome-zarr: <stem>_x4.ome.zarr (OME-NGFF multiscales), "
        "written block by block for images larger than memory (default: tiff)",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="NAME|PATH",
        help=f"a model name ({', '.join(REGISTRY)}), a .pth/.safetensors file or a BioImage Model Zoo "
        f"package (.zip) (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output folder (default: <stem>_microdisk_sr/ beside each input)",
    )
    parser.add_argument(
        "--tile",
        type=int,
        default=infer.DEFAULT_TILE,
        metavar="N",
        help="tile side in input pixels; 0 = whole images, fastest but most memory "
        f"(default: {infer.DEFAULT_TILE})",
    )
    parser.add_argument(
        "--tile-pad",
        type=int,
        metavar="N",
        help="overlap around each tile in input pixels (default: the model's, from its receptive field)",
    )
    parser.add_argument(
        "--device", choices=DEVICE_CHOICES, default="auto", help="where to run (default: auto)"
    )
    parser.add_argument(
        "--half",
        action="store_true",
        help="half precision, a fast preview: float16 on CUDA, bfloat16 on CPUs that compute it natively "
        "(about 2x faster there); ignored elsewhere",
    )
    parser.add_argument(
        "--consistency",
        action="store_true",
        help="also check each output against its input: degraded back (area averaging, or --profile), it "
        "must reproduce the input; writes <stem>_x4_consistency.tif beside the output (|degrade(SR) - LR| "
        "in fractions of the data range) and records the PSNR in the output's provenance",
    )
    add_profile_option(parser)
    add_bit_depth_option(parser)
    parser.add_argument(
        "--region",
        metavar="Y0:Y1,X0:X1",
        help="upscale only this window of each input (input pixels; every plane of a stack), a preview equal "
        "to the same window of the whole result: written as <stem>_x4_Y0-Y1_X0-X1.tif",
    )
    parser.add_argument(
        "--redo",
        action="store_true",
        help="upscale even the inputs whose output is there with the same provenance (into a numbered file)",
    )
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="process only the I-th of N deterministic slices of the sorted inputs (from 1): N array jobs or "
        "machines sharing a file system split a plate with no coordinator",
    )
    parser.set_defaults(func=run)


def add_profile_option(parser: argparse.ArgumentParser) -> None:
    """``--profile PROFILE.json``, shared by consistency, upscale and evaluate."""
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="PROFILE.json",
        help="for the LR-consistency check: a calibrated degradation profile (microdisk-sr calibrate) whose "
        "PSF, down-sampling, gain and offset degrade the SR image back (default: area averaging, no blur)",
    )


def add_bit_depth_option(parser: argparse.ArgumentParser) -> None:
    """``--bit-depth N``, shared by upscale, finetune and evaluate."""
    parser.add_argument(
        "--bit-depth",
        type=int,
        metavar="N",
        help="significant bits of unsigned integer images, e.g. 12 for a 12-bit camera writing 16-bit files: "
        "values 0 to 2^N-1 map to the network's full range (default: uint8 and uint16 by the dtype's full "
        "range, which shows 12-bit data 16x too dark; wider and signed integers, like floats, by their own "
        "minimum and maximum); give the same to finetune, upscale and evaluate",
    )


def run(args: argparse.Namespace) -> int:
    config = infer.UpscaleConfig(
        tile=args.tile, tile_pad=args.tile_pad, device=args.device, half=args.half, bit_depth=args.bit_depth
    )
    region = None if args.region is None else Region.parse(args.region)
    inputs = batch.expand_inputs(args.inputs)
    if args.shard is not None:
        inputs = batch.shard(inputs, *batch.parse_shard(args.shard))
    if args.profile is not None and not args.consistency:
        raise InputError("--profile is for the consistency check: add --consistency")
    if args.consistency and region is not None:
        raise InputError("--consistency checks whole images: leave out --region, or check the window later")
    to_zarr = args.format == "ome-zarr"
    if to_zarr and (region is not None or args.consistency):
        raise InputError("--region and --consistency write TIFFs: leave them out with --format ome-zarr")
    stores = [path for path in inputs if lazy.is_store(path)]
    if stores and not to_zarr:
        raise InputError(
            f"{stores[0]} is a Zarr store: its result is written as OME-Zarr, add --format ome-zarr"
        )
    degradation = AREA if args.profile is None else read_profile(args.profile)
    device = resolve_device(config.device)
    device_text = describe_device(device)
    model = load_model(args.model)  # on the CPU: each upscale job moves its own copy to the device
    scale = model.spec.scale
    window = "" if region is None else f"_{region.y0}-{region.y1}_{region.x0}-{region.x1}"
    suffix = ".ome.zarr" if to_zarr else ".tif"
    targets = [
        (args.out or io.output_dir_for(path)) / f"{io.image_stem(path)}_x{scale}{window}{suffix}"
        for path in inputs
    ]
    for target in targets:
        io.refuse_input_as_output(target, inputs)
    for folder in dict.fromkeys(target.parent for target in targets):
        io.ensure_writable_dir(folder)
    settings = {
        "model_sha256": model.sha256,
        "scale": scale,
        "tile": config.tile,
        "tile_pad": infer.tile_pad_for(model, config.tile_pad),
        "half": config.half and half_dtype(device) is not None,
        "bit_depth": config.bit_depth,
        "region": None if region is None else [region.y0, region.y1, region.x0, region.x1],
    }

    check_with = degradation.describe() if args.consistency else None
    todo = []  # what a rerun has not done yet: only these are read, checked and upscaled
    for path, target in zip(inputs, targets, strict=True):
        made_with = settings | _identity(path)
        if args.redo or not _done(target, made_with, check_with):
            todo.append((path, target, made_with))
    if to_zarr:
        norms = [_check_lazy_input(path, config.bit_depth) for path, _, _ in todo]  # before any work
        print(f"upscaling x{scale} with {model.name} on {device_text} into OME-Zarr")
        for (path, target, made_with), norm in zip(todo, norms, strict=True):
            _upscale_to_ome_zarr(path, target, made_with, norm, model, config)
        _report_skipped(len(inputs) - len(todo), len(inputs))
        return 0
    for path, _, _ in todo:  # check every input to compute before any work; the pixels are read again below
        _check_input(path, config.bit_depth, region)

    print(f"upscaling x{scale} with {model.name} on {device_text}")
    for path, target, made_with in todo:
        source = io.read_image(path)
        started = time.perf_counter()
        job = infer.upscale(
            source.data,
            model,
            tile=config.tile,
            tile_pad=config.tile_pad,
            device=device,
            half=config.half,
            bit_depth=config.bit_depth,
            region=region,
        )
        with tqdm(desc=path.name, unit="tile", leave=False) as bar:
            result = drive(job, _progress_on(bar))
        seconds = time.perf_counter() - started
        provenance = result.provenance | {
            "input_path": str(path.resolve()),
            "input_sha256": made_with["input_sha256"],
        }
        check = None
        if args.consistency:
            check = measure_consistency(
                result.image, source.data, degradation=degradation, bit_depth=config.bit_depth
            )
            provenance |= check.provenance()
        out = io.write_tiff(
            target,
            result.image,
            pixel_size=None if source.pixel_size is None else source.pixel_size.scaled(1 / scale),
            description=provenance,
            names=io.numbered_paths(target),
        )
        shape = "x".join(map(str, source.data.shape))
        print(f"{path} ({shape}) -> {out} ({'x'.join(map(str, result.image.shape))}) in {seconds:.1f} s")
        if check is not None:
            map_path = out.with_name(f"{out.stem}_consistency.tif")
            where = io.write_tiff(
                map_path,
                check.map,
                pixel_size=source.pixel_size,
                description={"sr": str(out), "values": "|degrade(SR) - LR| / data range"}
                | check.provenance(),
                names=io.numbered_paths(map_path),
            )
            print(f"  LR consistency {check.psnr:.2f} dB ({check.degradation}) -> {where}")
    _report_skipped(len(inputs) - len(todo), len(inputs))
    return 0


def _report_skipped(skipped: int, count: int) -> None:
    if skipped:
        print(f"skipped {skipped} of {count} input(s) whose output was there with the same provenance")


def _identity(path: Path) -> dict[str, "str | None"]:
    """What identifies an input's pixels in provenance: a file's SHA-256, a Zarr store's cheap identity."""
    if lazy.is_store(path):
        return {"input_sha256": None, "input_identity": lazy.store_identity(path)}
    return {"input_sha256": file_sha256(path)}


def _check_lazy_input(path: Path, bit_depth: "int | None") -> tuple[Normalization, "Normalization | None"]:
    """Open an input lazily and compute its value mapping (reading it chunk by chunk where that needs its
    values); refuse it naming the file."""
    try:
        return lazy.lazy_normalizations(lazy.open_lazy(path), bit_depth=bit_depth)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def _upscale_to_ome_zarr(
    path: Path,
    target: Path,
    made_with: dict,
    norms: tuple[Normalization, "Normalization | None"],
    model: LoadedModel,
    config: infer.UpscaleConfig,
) -> None:
    """Upscale one input block by block into ``target`` (an OME-Zarr image), with a progress bar."""
    image = lazy.open_lazy(path)
    started = time.perf_counter()
    record = {"input_path": str(path.resolve())} | {
        k: v for k, v in made_with.items() if k.startswith("input")
    }
    job = ome_zarr.upscale_to_ome_zarr(image, model, target, config=config, norms=norms, record=record)
    with tqdm(desc=path.name, unit="block", leave=False) as bar:
        result = drive(job, _progress_on(bar))
    seconds = time.perf_counter() - started
    shape = "x".join(map(str, image.data.shape))
    out_shape = "x".join(map(str, result.shapes[0]))
    print(f"{path} ({shape}) -> {result.path} ({out_shape}, {len(result.shapes)} levels) in {seconds:.1f} s")


def _done(target: Path, made_with: dict, check_with: "str | None") -> bool:
    """Whether an output is there made the same way (:func:`.batch.done_output`) and, when ``check_with`` is
    given, checked for LR consistency with that degradation."""
    if check_with is None:
        return batch.done_output(target, made_with) is not None
    for candidate in io.numbered_paths(target):
        if not candidate.exists():
            return False
        if batch.done_output(candidate, made_with) == candidate:
            record = io.read_tiff_description(candidate) or {}
            if record.get("lr_consistency_degradation") == check_with:
                return True
    return False


def _check_input(path: Path, bit_depth: "int | None", region: "Region | None") -> None:
    """Refuse an input whose pixels the settings cannot upscale, naming the file."""
    image = io.read_image(path).data
    try:
        validate_image(image)
        layout = image_layout(image.shape)
        normalizations_for(image, layout, bit_depth=bit_depth)
        if region is not None:
            region.check_inside(layout.height, layout.width)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def _progress_on(bar: tqdm) -> Callable[[infer.TileEvent], None]:
    """Show tile events on ``bar`` (after an out-of-memory restart the count goes back, the total changes)."""

    def show(event: infer.TileEvent) -> None:
        bar.total = event.total
        if event.planes > 1:
            bar.set_postfix_str(f"plane {event.plane + 1}/{event.planes}", refresh=False)
        bar.update(event.done - bar.n)

    return show
