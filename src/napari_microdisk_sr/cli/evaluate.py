"""``microdisk-sr evaluate``: score x4 upscaling methods against high-resolution images (PSNR, SSIM)."""

import argparse
from pathlib import Path

from tqdm import tqdm

from ..core import infer, io, metrics, outputs
from ..core.degradation import DEGRADATIONS
from ..core.errors import InputError
from ..core.outputs import safe_name
from ..core.progress import drive
from .upscale import add_bit_depth_option

DEFAULT_METHODS = f"{metrics.BICUBIC},{metrics.PRETRAINED}"


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score upscaling methods against high-resolution images (PSNR, SSIM)",
        description=(
            "Upscale low-resolution images x4 with each method and score the results against the "
            "high-resolution references: PSNR, SSIM, and the gain in dB and % over bicubic and over the "
            f"pretrained model: a fine-tuned run's own parent (evaluated too), else {metrics.PRETRAINED}. "
            "The low-resolution images are the given --lr acquisitions (e.g. the <stem>_lr.tif of "
            "'microdisk-sr register', with its <stem>_hr.tif as HR), "
            "or are made from the references by --degradation. Writes a CSV table, a JSON file beside it, "
            "and prints the table."
        ),
    )
    parser.add_argument("hr", nargs="+", type=Path, metavar="HR", help="high-resolution reference images")
    parser.add_argument(
        "--lr",
        nargs="+",
        type=Path,
        metavar="LR",
        help="registered low-resolution images, one per HR image in the same order, each exactly 1/4 of its "
        "size (default: made from the HR images by --degradation)",
    )
    parser.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help="comma-separated methods: 'bicubic', model names, or model files such as RUN_DIR/model.pth or "
        "a zoo package (.zip) "
        f"(default: {DEFAULT_METHODS})",
    )
    parser.add_argument(
        "--degradation",
        choices=DEGRADATIONS,
        default="bicubic",
        help="how LR images are made from HR ones without --lr (default: bicubic)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the realistic degradation (default: 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument(
        "--tile",
        type=int,
        default=infer.DEFAULT_TILE,
        help=f"tile side in LR pixels for the models, 0 for whole images (default: {infer.DEFAULT_TILE})",
    )
    parser.add_argument(
        "--error-maps",
        type=Path,
        metavar="DIR",
        help="also write each image's absolute-error map per method as float32 TIFFs into DIR",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="the CSV table to write; the JSON goes beside it (same name, .json); existing files are kept "
        "and a -1, -2, ... suffix added (default: metrics.csv in the first HR image's <stem>_microdisk_sr "
        "folder)",
    )
    add_bit_depth_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    given = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not given:
        raise InputError(
            f"--methods {args.methods!r} names no method; give them comma-separated, e.g. "
            "--methods bicubic,realesrgan-x4plus"
        )
    methods = list(metrics.with_parents(given))
    if len(methods) > len(given):
        print(f"also evaluated, as the parents of fine-tuned runs: {', '.join(methods[len(given) :])}")
    if args.lr is not None and len(args.lr) != len(args.hr):
        raise InputError(f"{len(args.hr)} HR image(s) but {len(args.lr)} --lr image(s): give one LR per HR")
    if args.out is None:
        csv_path = outputs.metrics_path_for(source_path=args.hr[0])
    elif args.out.suffix.lower() != ".csv":
        raise InputError(f"--out {args.out} must be a .csv file (the JSON is written beside it)")
    else:
        csv_path = outputs.free_table_path(args.out)
    io.refuse_input_as_output(csv_path, [*args.hr, *(args.lr or [])])
    io.ensure_writable_dir(csv_path.parent)
    if args.error_maps is not None:
        io.ensure_writable_dir(args.error_maps)

    hr_files = [io.read_image(path) for path in args.hr]
    lr_images = None if args.lr is None else [io.read_image(path).data for path in args.lr]
    names = _unique_names([path.stem for path in args.hr])
    job = metrics.evaluate(
        [f.data for f in hr_files],
        methods,
        lr_images=lr_images,
        degradation=args.degradation,
        names=names,
        device=args.device,
        tile=args.tile,
        error_maps=args.error_maps is not None,
        seed=args.seed,
        bit_depth=args.bit_depth,
    )
    with tqdm(total=len(names) * len(methods), unit="result", desc="evaluate", leave=False) as bar:

        def show(event: metrics.EvalEvent) -> None:
            bar.n = event.done
            tiles = f" tile {event.tiles_done}/{event.tiles_total}" if event.tiles_total else ""
            bar.set_postfix_str(f"{event.image} {event.method}{tiles}")

        result = drive(job, show)

    csv_path = result.save(csv_path)
    json_path = csv_path.with_suffix(".json")
    print(result.table())
    print(f"\nwrote {csv_path} and {json_path}")
    if args.error_maps is not None:
        pixel_sizes = dict(zip(names, (f.pixel_size for f in hr_files), strict=True))
        for (image, method), error in result.error_maps.items():
            path = args.error_maps / f"{safe_name(image)}_{safe_name(method)}_abs_error.tif"
            io.write_tiff(
                path,
                error,
                pixel_size=pixel_sizes[image],
                description={"image": image, "method": method, "values": "|SR - HR| / data range"},
                names=io.numbered_paths(path),
            )
        print(f"wrote {len(result.error_maps)} error map(s) into {args.error_maps}")
    return 0


def _unique_names(stems: list[str]) -> list[str]:
    """Image names from file stems, made unique (and never the mean rows' name) with -2, -3, ..."""
    names: list[str] = []
    for stem in stems:
        name, n = stem, 1
        while name in names or name == metrics.MEAN:
            n += 1
            name = f"{stem}-{n}"
        names.append(name)
    return names
