"""``microdisk-sr register``: register a low- and a high-magnification image of one field as an x4 pair."""

import argparse
import math
from pathlib import Path

from ..core.register import GRID, MIN_NCC, register_files


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "register",
        help="register a low- and a high-magnification image of one field as an x4 pair",
        description=(
            "Find where HR (a higher-magnification image of part of LR's field, e.g. 10X of a 4X image) lies "
            "in LR: scale, rotation and shift, the scale refined from the nominal one (objectives miss their "
            "label by 1-2 %). Writes into DIR <LR>_lr.tif (LR cropped to the overlap), <LR>_hr.tif (HR "
            f"resampled onto exactly the x{GRID} grid of that crop) and <LR>_registration.json (the fit, its "
            "normalised correlation, the inputs' SHA-256): a pair for 'evaluate --lr' and 'crop --lr'. A "
            "pair that does not overlap or fits poorly is refused and nothing is written."
        ),
    )
    parser.add_argument("lr", type=Path, metavar="LR", help="the low-magnification image")
    parser.add_argument("hr", type=Path, metavar="HR", help="the high-magnification image")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder of the outputs")
    parser.add_argument(
        "--scale",
        type=_positive,
        metavar="S",
        help="nominal HR pixels per LR pixel, e.g. 2.5 for 4X -> 10X on one camera (default: from the "
        "files' pixel sizes)",
    )
    parser.add_argument(
        "--min-ncc",
        type=float,
        default=MIN_NCC,
        metavar="C",
        help=f"refuse fits whose normalised correlation is below C (default: {MIN_NCC:g})",
    )
    parser.set_defaults(func=run)


def _positive(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"the scale is a positive number, not {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    written = register_files(args.lr, args.hr, args.out, scale=args.scale, min_ncc=args.min_ncc)
    fit = written.registration
    t = fit.transform
    off = 100 * (t.scale / fit.nominal_scale - 1)
    print(
        f"scale {t.scale:.4f} (nominal {fit.nominal_scale:g}, {off:+.2f} %), "
        f"rotation {t.rotation_deg:+.3f} deg, HR origin at LR (y {t.shift[0]:.2f}, x {t.shift[1]:.2f}), "
        f"normalised correlation {fit.ncc:.4f}"
    )
    y0, x0, y1, x1 = fit.lr_box
    names = ", ".join(path.name for path in (written.lr, written.hr, written.json))
    print(f"overlap: LR rows {y0}:{y1}, columns {x0}:{x1} -> {names} in {args.out}")
    return 0
