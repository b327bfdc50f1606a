"""``microdisk-sr models``: the named models, where their weights come from, and what is cached."""

import argparse

import torch

from ..core.models import DEFAULT_MODEL, REGISTRY
from ..core.weights import (
    EMBEDDED,
    cache_dir,
    download_official,
    embedded_cache_path,
    official_cache_path,
)

_DOWNLOADABLE = tuple(name for name, entry in EMBEDDED.items() if entry.official is not None)


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the models that can be used by name",
        description=(
            "List the models that --model accepts by name: their network, where their weights come from "
            "and whether the converted weights are cached. A .pth or .safetensors file is accepted wherever "
            "a name is. The weights are embedded (no download needed); --download fetches the official fp32 "
            "release file of a model, verified by its SHA-256, to use as a file."
        ),
    )
    parser.add_argument(
        "--download",
        choices=_DOWNLOADABLE,
        metavar="NAME",
        help=f"download the official fp32 weights of NAME ({', '.join(_DOWNLOADABLE)}) and print their path",
    )
    parser.add_argument(
        "--timeout", type=_seconds, default=10.0, metavar="S", help="network timeout in seconds (default: 10)"
    )
    parser.set_defaults(func=run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    if args.download:
        print(download_official(args.download, timeout=args.timeout))
        return 0
    print(f"weights cache: {cache_dir()} (set MICRODISK_SR_CACHE to move it)")
    for name, entry in REGISTRY.items():
        with torch.device("meta"):
            n_params = sum(p.numel() for p in entry.spec.build().parameters())
        cached = embedded_cache_path(name)
        print()
        print(f"{name}{' (default)' if name == DEFAULT_MODEL else ''}")
        print(f"  {entry.description}")
        print(f"  network: {entry.spec} - x{entry.spec.scale}, {n_params:,} parameters")
        print(f"  weights: {entry.source}")
        print(f"  cached:  {cached if cached.is_file() else 'no (converted to fp32 on first use)'}")
        if name in _DOWNLOADABLE:
            official = official_cache_path(name)
            state = (
                official if official.is_file() else f"not downloaded (microdisk-sr models --download {name})"
            )
            print(f"  official fp32 file: {state}")
    return 0
