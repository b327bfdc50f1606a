"""``microdisk-sr crop``: detect the microdisks of images and write one crop per disk into a crop set."""

import argparse
import math
import sys
from pathlib import Path

from tqdm import tqdm

from ..core import io
from ..core.crops import CSV_NAME, crop_disks, write_crop_set
from ..core.errors import InputError
from ..core.outputs import safe_name
from .detect import add_detection_options, find_disks


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "crop",
        help="crop the microdisks of images into a crop set",
        description=(
            "Detect the microdisks of each IMAGE and write a square crop around each one into DIR as "
            f"<image>_disk001.tif, ... (in the image's dtype), listed in DIR/{CSV_NAME} with the boxes and "
            "disks in image pixels: the crop set that 'microdisk-sr finetune' learns from. Disks that touch "
            f"an image's border are left out unless --keep-border. A DIR that already holds a {CSV_NAME} is "
            "added to, never overwritten. Every image is detected before anything is written."
        ),
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the crop set's folder")
    parser.add_argument(
        "--margin",
        type=_margin,
        default=0.25,
        metavar="F",
        help="border around each disk, as a fraction of its radius (default: 0.25)",
    )
    add_detection_options(parser)
    parser.add_argument("--keep-border", action="store_true", help="crop disks that touch the border too")
    parser.set_defaults(func=run)


def _margin(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"a margin is a fraction of the radius >= 0, not {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    io.refuse_input_as_output(args.out, args.images)
    batches = []
    for path in tqdm(args.images, desc="detecting", unit="image", file=sys.stderr, disable=None):
        image = io.read_image(path).data
        disks = find_disks(image, args, str(path))
        crops = crop_disks(
            image, disks, margin=args.margin, skip_border=not args.keep_border, source=str(path.resolve())
        )
        if not crops:
            raise InputError(
                f"all {len(disks)} disks found in {path} touch its border; use --keep-border to crop them"
            )
        batches.append((path, crops))
    written = [len(write_crop_set(crops, args.out, stem=safe_name(path.stem))) for path, crops in batches]
    n_crops = sum(len(crops) for _, crops in batches)
    held = (
        f"; {n_crops - sum(written)} were in the set already and not added again"
        if sum(written) < n_crops
        else ""
    )
    print(f"{sum(written)} crops of {len(batches)} image(s) -> {args.out}{held}")
    return 0
