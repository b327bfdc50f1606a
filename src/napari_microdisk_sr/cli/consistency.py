"""``microdisk-sr consistency``: degrade an SR image back and compare it with its LR input (no HR needed)."""

import argparse
from pathlib import Path

from ..core import io
from ..core.consistency import AREA, SCALE, read_profile
from ..core.consistency import lr_consistency as measure_consistency
from ..core.intensity import AUTO, Intensity
from .upscale import add_intensity_option, add_profile_option


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "consistency",
        help="check an SR image against its LR input: degraded back, does it reproduce it?",
        description=(
            f"Degrade SR back to the LR grid (x{SCALE}) and compare it with LR: where they differ, the "
            "network added or removed something. The degradation is the calibrated --profile when given, "
            f"else area averaging of {SCALE}x{SCALE} blocks. Writes the per-pixel map |degrade(SR) - LR| at "
            "the LR's size (gray: channels averaged; float32, in fractions of the data range) and prints the "
            "consistency as a PSNR in dB on its last line."
        ),
    )
    add_profile_option(parser)
    parser.add_argument("sr", type=Path, metavar="SR", help="the super-resolved image (x4 of LR, its dtype)")
    parser.add_argument("lr", type=Path, metavar="LR", help="the low-resolution image it was made from")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="MAP.tif",
        help="the map to write (an existing file is kept and -1, -2, ... added)",
    )
    add_intensity_option(parser, default="the one SR's provenance records, else auto")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    degradation = AREA if args.profile is None else read_profile(args.profile)
    io.refuse_input_as_output(args.out, [args.sr, args.lr])
    io.ensure_writable_dir(args.out.parent)
    lr = io.read_image(args.lr)
    result = measure_consistency(
        io.read_image(args.sr).data,
        lr.data,
        degradation=degradation,
        intensity=_intensity(args.intensity, args.sr),
    )
    out = io.write_tiff(
        args.out,
        result.map,
        pixel_size=lr.pixel_size,
        description={
            "sr": str(args.sr.resolve()),
            "lr": str(args.lr.resolve()),
            "values": "|degrade(SR) - LR| / data range",
        }
        | result.provenance(),
        names=io.numbered_paths(args.out),
    )
    print(f"degraded back with {result.degradation}")
    print(f"wrote {out} (worst pixel {result.map.max():.4f} of the data range)")
    if result.noise_psnr is not None:
        print(f"the profile's noise alone would give {result.noise_psnr:.2f} dB")
    print(f"LR consistency: {result.psnr:.2f} dB")
    return 0


def _intensity(given: "str | None", sr: Path) -> Intensity:
    """The mapping ``given``, else the one ``upscale`` recorded in the SR file's provenance, else auto."""
    if given is not None:
        return Intensity.parse(given)
    recorded = (io.read_tiff_description(sr) or {}).get("intensity")
    return AUTO if recorded is None else Intensity.parse(recorded)
