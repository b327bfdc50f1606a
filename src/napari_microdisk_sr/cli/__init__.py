"""The ``microdisk-sr`` command line: one thin subcommand module per job, all over the same core.

Each subcommand module defines ``add_parser(subparsers)`` which registers its parser and sets
``func=run`` where ``run(args) -> int`` does the work.
"""

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..core.errors import MicrodiskSRError

SUBCOMMANDS = (
    "upscale",
    "models",
    "detect",
    "crop",
    "register",
    "calibrate",
    "finetune",
    "evaluate",
    "consistency",
    "export",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microdisk-sr",
        description="Fine-tune Real-ESRGAN on microdisks and super-resolve microscope images (x4).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the core does")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f".{name}", __name__).add_parser(sub)
    return parser


def main(argv: "Sequence[str] | None" = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:  # dask.distributed logs at INFO by default: every step of a cluster's start
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    try:
        code = int(args.func(args) or 0)
    except MicrodiskSRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one of the processes of a torchrun launch
        from ..core.train.ddp import end_process

        end_process(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
