"""``microdisk-sr crop``: detect the microdisks of images and write one crop per disk into a crop set."""

import argparse
import math
import sys
from pathlib import Path

from tqdm import tqdm

from ..core import io
from ..core.crops import CSV_NAME, PAIR_SCALE, crop_disks, crop_pairs, write_crop_set
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
            "added to, never overwritten. Every image is detected before anything is written. With --lr, "
            "each IMAGE is the HR side of a registered pair ('microdisk-sr register' writes <stem>_hr.tif, "
            f"exactly {PAIR_SCALE}x <stem>_lr.tif): the disks found on it are cut from both, aligned, into a "
            "paired crop set (<image>_disk001_lr.tif, ...), on which 'microdisk-sr finetune' learns from the "
            "real LR."
        ),
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the crop set's folder")
    parser.add_argument(
        "--lr",
        nargs="+",
        type=Path,
        metavar="LR",
        help=f"the registered LR image of each IMAGE, in the same order, each exactly 1/{PAIR_SCALE} of its "
        "size: makes a paired crop set",
    )
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
    if args.lr is not None and len(args.lr) != len(args.images):
        raise InputError(
            f"{len(args.images)} image(s) but {len(args.lr)} --lr image(s): give one LR per image"
        )
    io.refuse_input_as_output(args.out, [*args.images, *(args.lr or [])])
    batches = []
    lr_paths = args.lr or [None] * len(args.images)
    for path, lr_path in tqdm(
        list(zip(args.images, lr_paths, strict=True)),
        desc="detecting",
        unit="image",
        file=sys.stderr,
        disable=None,
    ):
        image = io.read_image(path).data
        disks = find_disks(image, args, str(path))
        options = {"margin": args.margin, "skip_border": not args.keep_border, "source": str(path.resolve())}
        if lr_path is None:
            crops = crop_disks(image, disks, **options)
        else:
            try:
                crops = crop_pairs(image, io.read_image(lr_path).data, disks, **options)
            except InputError as exc:
                raise InputError(f"{path} and {lr_path}: {exc}") from exc
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
    kind = "paired crops" if args.lr is not None else "crops"
    print(f"{sum(written)} {kind} of {len(batches)} image(s) -> {args.out}{held}")
    return 0
