"""``microdisk-sr upscale``: super-resolve image files x4 into TIFFs, tile by tile, never overwriting."""

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from ..core import batch, infer, io
from ..core.consistency import AREA, read_profile
from ..core.consistency import lr_consistency as measure_consistency
from ..core.device import DEVICE_CHOICES, describe_device, half_dtype, resolve_device
from ..core.errors import InputError
from ..core.images import Intensity, image_layout, normalizations_for, validate_image
from ..core.models import DEFAULT_MODEL, REGISTRY, load_model
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
            "there with the same provenance (input and weights SHA-256, settings)."
        ),
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, folders (their image files, not recursive) or quoted patterns ('plate/*.tif')",
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
    add_intensity_option(parser, default="the model's own if it was fine-tuned, else auto")
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


def add_intensity_option(parser: argparse.ArgumentParser, *, default: str = "auto") -> None:
    """``--intensity MODE``, the value mapping, shared by every subcommand that maps image values: its text,
    read by :meth:`.images.Intensity.parse` (whose errors say what to give); None when not given, ``default``
    says in the help what that means."""
    parser.add_argument(
        "--intensity",
        metavar="MODE",
        help="how image values map to the network's 0-1 and back: auto (uint8 by its range, every other "
        "dtype by percentile), range (uint8/uint16 by the dtype's full range, others by their min/max), "
        "bits:N (0 to 2^N-1, e.g. bits:12 for a 12-bit camera writing 16-bit files), percentile or "
        "percentile:LOW,HIGH (the image's 1st-99.8th percentiles map to 0-1, as in CSBDeep; the output is "
        f"mapped back and keeps brighter peaks) (default: {default}); give the same to finetune, upscale "
        "and evaluate",
    )


def run(args: argparse.Namespace) -> int:
    config = infer.UpscaleConfig(
        tile=args.tile, tile_pad=args.tile_pad, device=args.device, half=args.half, intensity=args.intensity
    )
    region = None if args.region is None else Region.parse(args.region)
    inputs = batch.expand_inputs(args.inputs)
    if args.shard is not None:
        inputs = batch.shard(inputs, *batch.parse_shard(args.shard))
    if args.profile is not None and not args.consistency:
        raise InputError("--profile is for the consistency check: add --consistency")
    if args.consistency and region is not None:
        raise InputError("--consistency checks whole images: leave out --region, or check the window later")
    degradation = AREA if args.profile is None else read_profile(args.profile)
    device = resolve_device(config.device)
    device_text = describe_device(device)
    model = load_model(args.model)  # on the CPU: each upscale job moves its own copy to the device
    intensity = infer.intensity_for(model, config.intensity)
    scale = model.spec.scale
    window = "" if region is None else f"_{region.y0}-{region.y1}_{region.x0}-{region.x1}"
    targets = [(args.out or io.output_dir_for(path)) / f"{path.stem}_x{scale}{window}.tif" for path in inputs]
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
        "intensity": str(intensity),
        "region": None if region is None else [region.y0, region.y1, region.x0, region.x1],
    }

    check_with = degradation.describe() if args.consistency else None
    todo = []  # what a rerun has not done yet: only these are read, checked and upscaled
    for path, target in zip(inputs, targets, strict=True):
        made_with = settings | {"input_sha256": file_sha256(path)}
        if args.redo or not _done(target, made_with, check_with):
            todo.append((path, target, made_with))
    for path, _, _ in todo:  # check every input to compute before any work; the pixels are read again below
        _check_input(path, intensity, region)

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
            intensity=intensity,
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
                result.image, source.data, degradation=degradation, intensity=intensity
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
    if len(todo) < len(inputs):
        skipped = len(inputs) - len(todo)
        print(f"skipped {skipped} of {len(inputs)} input(s) whose output was there with the same provenance")
    return 0


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


def _check_input(path: Path, intensity: Intensity, region: "Region | None") -> None:
    """Refuse an input whose pixels the settings cannot upscale, naming the file."""
    image = io.read_image(path).data
    try:
        validate_image(image)
        layout = image_layout(image.shape)
        normalizations_for(image, layout, intensity=intensity)
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
