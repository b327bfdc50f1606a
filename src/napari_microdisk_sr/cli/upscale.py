"""``microdisk-sr upscale``: super-resolve image files x4 into TIFFs, tile by tile, never overwriting."""

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from ..core import infer, io
from ..core.device import DEVICE_CHOICES, describe_device, resolve_device
from ..core.errors import InputError
from ..core.images import image_layout, normalizations_for, validate_image
from ..core.models import DEFAULT_MODEL, REGISTRY, load_model
from ..core.progress import drive


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "upscale",
        help="super-resolve images x4 into TIFFs",
        description=(
            "Super-resolve each INPUT (TIFF, PNG, JPEG; gray, RGB or RGBA; T/Z stacks plane by plane) "
            "with a model and write <stem>_x4.tif with the input's dtype and value range, and its pixel "
            "size divided by 4. Outputs go into --out, by default into <stem>_microdisk_sr/ beside each "
            "input; an existing file is never overwritten (-1, -2, ... is added). All inputs and the output "
            "folders are checked before any work starts."
        ),
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files to upscale")
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
    add_bit_depth_option(parser)
    parser.set_defaults(func=run)


def add_bit_depth_option(parser: argparse.ArgumentParser) -> None:
    """``--bit-depth N``, shared by upscale, finetune and evaluate."""
    parser.add_argument(
        "--bit-depth",
        type=int,
        metavar="N",
        help="significant bits of unsigned integer images, e.g. 12 for a 12-bit camera writing 16-bit files: "
        "values 0 to 2^N-1 map to the network's full range (default: the dtype's full range, which shows "
        "12-bit data 16x too dark); give the same to finetune, upscale and evaluate",
    )


def run(args: argparse.Namespace) -> int:
    config = infer.UpscaleConfig(
        tile=args.tile, tile_pad=args.tile_pad, device=args.device, half=args.half, bit_depth=args.bit_depth
    )
    for path in args.inputs:  # read and check every input before any work; the pixels are read again below
        image = io.read_image(path).data
        try:
            validate_image(image)
            normalizations_for(image, image_layout(image.shape), bit_depth=config.bit_depth)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from exc
    device = resolve_device(config.device)
    device_text = describe_device(device)
    model = load_model(args.model)  # on the CPU: each upscale job moves its own copy to the device
    scale = model.spec.scale
    targets = [(args.out or io.output_dir_for(path)) / f"{path.stem}_x{scale}.tif" for path in args.inputs]
    for target in targets:
        io.refuse_input_as_output(target, args.inputs)
    for folder in dict.fromkeys(target.parent for target in targets):
        io.ensure_writable_dir(folder)

    print(f"upscaling x{scale} with {model.name} on {device_text}")
    for path, target in zip(args.inputs, targets, strict=True):
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
        )
        with tqdm(desc=path.name, unit="tile", leave=False) as bar:
            result = drive(job, _progress_on(bar))
        seconds = time.perf_counter() - started
        out = io.write_tiff(
            io.unique_path(target),
            result.image,
            pixel_size=None if source.pixel_size is None else source.pixel_size.scaled(1 / scale),
            description=result.provenance | {"input_path": str(path.resolve())},
        )
        shape = "x".join(map(str, source.data.shape))
        print(f"{path} ({shape}) -> {out} ({'x'.join(map(str, result.image.shape))}) in {seconds:.1f} s")
    return 0


def _progress_on(bar: tqdm) -> Callable[[infer.TileEvent], None]:
    """Show tile events on ``bar`` (after an out-of-memory restart the count goes back, the total changes)."""

    def show(event: infer.TileEvent) -> None:
        bar.total = event.total
        if event.planes > 1:
            bar.set_postfix_str(f"plane {event.plane + 1}/{event.planes}", refresh=False)
        bar.update(event.done - bar.n)

    return show
