"""``microdisk-sr export``: a fine-tuned model as a BioImage Model Zoo package (with TorchScript for Fiji)."""

import argparse
from pathlib import Path

from ..core.export import export_package
from ..core.package_format import EXPORT_DTYPES


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a fine-tuned model as a BioImage Model Zoo package",
        description=(
            "Write the model of a fine-tuning run (RUN_DIR/model.pth with its model.json and history.csv) "
            "or a weights file as a bioimage.io model package (format 0.5): the flat state dict with a "
            "self-contained architecture file, TorchScript weights for deepImageJ/Fiji, test tensors, a "
            "cover and a README with the training recipe and the validation table. The package is "
            "validated with bioimageio.spec (pip install 'napari-microdisk-sr[bioimageio]'); check it with "
            "'bioimageio test PACKAGE.zip'. An existing file is never overwritten."
        ),
    )
    parser.add_argument(
        "source", type=Path, metavar="RUN_DIR_OR_WEIGHTS", help="a run folder or weights file"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="PACKAGE.zip", help="the package to write")
    parser.add_argument(
        "--dtype",
        choices=EXPORT_DTYPES,
        help="the input type the package declares (default: uint16 if the intensity is bits:N, else uint8); "
        "integers map by their range (or bit depth), float32 images by their own min/max",
    )
    parser.add_argument(
        "--intensity",
        metavar="range|bits:N",
        help="the value mapping of integer input: range, or bits:N for N significant bits, e.g. bits:12 "
        "(default: the run's, else range); a package cannot invert a percentile map",
    )
    parser.add_argument(
        "--gray",
        action="store_true",
        help="declare one-channel input and output (microscope images) instead of the network's RGB",
    )
    parser.add_argument(
        "--author", action="append", default=[], metavar="NAME", help="an author of the model (repeatable)"
    )
    parser.add_argument("--name", help="the package's name (default: from the model's)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = export_package(
        args.source,
        args.out,
        dtype=args.dtype,
        intensity=args.intensity,
        gray=args.gray,
        authors=tuple(args.author),
        name=args.name,
    )
    print(
        f"{result.path} ({result.size_bytes / 1e6:.1f} MB) written in {result.seconds:.1f} s; "
        f"TorchScript vs state dict: {result.torchscript_max_abs_diff:.2g} max abs difference"
    )
    return 0
