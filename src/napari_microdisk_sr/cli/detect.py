"""``microdisk-sr detect``: find the microdisks of an image and list their centres and radii."""

import argparse
import math
from pathlib import Path

import numpy as np

from ..core import io
from ..core.detect import DEFAULT_MIN_RADIUS, MIN_RADIUS, POLARITIES, Disk, detect_disks
from ..core.errors import InputError

CSV_COLUMNS = ("cy", "cx", "r", "score", "touches_border")


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "detect",
        help="find microdisks in an image",
        description=(
            "Find the microdisks (dark or bright disks) of IMAGE (TIFF, PNG, JPEG; gray or RGB) and list "
            "their centres (cy, cx), radii (r), scores and whether they touch the image border, in pixels "
            "of IMAGE, best first: as a table, or as a CSV file with --out (never overwritten: -1, -2, ... "
            "is added). The radius is found by itself; give a range when disks are missed or other round "
            "things are found."
        ),
    )
    parser.add_argument("image", type=Path, metavar="IMAGE", help="the image file")
    add_detection_options(parser)
    parser.add_argument("--out", type=Path, metavar="CSV", help="write the disks to this CSV file")
    parser.set_defaults(func=run)


def add_detection_options(parser: argparse.ArgumentParser) -> None:
    """The options that tune detection, shared by ``detect`` and ``crop``."""
    parser.add_argument(
        "--min-radius",
        type=_radius,
        metavar="R",
        help=f"smallest disk radius to look for, in pixels (default: {DEFAULT_MIN_RADIUS:g}, and disks far "
        "smaller than the typical one found are left out)",
    )
    parser.add_argument(
        "--max-radius",
        type=_radius,
        metavar="R",
        help="largest disk radius to look for, in pixels (default: half the image's smaller side)",
    )
    parser.add_argument(
        "--sensitivity",
        type=_fraction,
        default=0.5,
        metavar="S",
        help="0 = clear, complete disks only ... 1 = faint or partly hidden ones too (default: 0.5)",
    )
    parser.add_argument(
        "--polarity",
        choices=POLARITIES,
        default=POLARITIES[0],
        help="dark disks (bright-rimmed microdisks under transmitted light), bright disks on a darker ground "
        "(reflected light, fluorescence), or either (default: either)",
    )


def _radius(text: str) -> float:
    value = float(text)  # argparse turns a ValueError into a usage error
    if not (math.isfinite(value) and value >= MIN_RADIUS):
        raise argparse.ArgumentTypeError(f"a radius is a number of pixels >= {MIN_RADIUS:g}, not {text!r}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a number from 0 to 1, not {text!r}")
    return value


def find_disks(image: np.ndarray, args: argparse.Namespace, name: str) -> list[Disk]:
    """The disks of ``image`` with the options of ``args``; an InputError that says what to try if none."""
    if args.min_radius is not None and args.max_radius is not None and args.min_radius > args.max_radius:
        raise InputError(f"--min-radius {args.min_radius:g} is larger than --max-radius {args.max_radius:g}")
    try:
        disks = detect_disks(
            image,
            radius_range=(args.min_radius, args.max_radius),
            sensitivity=args.sensitivity,
            polarity=args.polarity,
        )
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from exc
    if not disks:
        raise InputError(
            f"no microdisk found in {name} (--polarity {args.polarity}); if it shows some, give their radius "
            "in pixels with --min-radius and --max-radius, or raise --sensitivity"
        )
    return disks


def run(args: argparse.Namespace) -> int:
    source = io.read_image(args.image)
    if args.out is not None:
        io.refuse_input_as_output(args.out, [args.image])
        if args.out.suffix.lower() != ".csv":
            raise InputError(f"--out {args.out} must be a .csv file")
    disks = find_disks(source.data, args, str(args.image))
    if args.out is None:
        print(_table(disks))
        return 0
    rows = [{column: getattr(disk, column) for column in CSV_COLUMNS} for disk in disks]
    io.ensure_writable_dir(args.out.parent)
    path = io.write_csv(args.out, rows, CSV_COLUMNS, names=io.numbered_paths(args.out))
    print(f"{len(disks)} disks in {args.image} -> {path}")
    return 0


def _table(disks: list[Disk]) -> str:
    lines = [f"{'#':>4} {'cy':>9} {'cx':>9} {'r':>7} {'score':>6}  border"]
    lines += [
        f"{i:>4} {d.cy:>9.2f} {d.cx:>9.2f} {d.r:>7.2f} {d.score:>6.3f}  {'yes' if d.touches_border else 'no'}"
        for i, d in enumerate(disks, start=1)
    ]
    return "\n".join(lines)
