"""``microdisk-sr evaluate``: score x4 upscaling methods against high-resolution images (PSNR, SSIM)."""

import argparse
from pathlib import Path

from tqdm import tqdm

from ..core import infer, io, metrics, outputs
from ..core.comparison_table import BICUBIC, MEAN, EvalResult
from ..core.consistency import AREA, read_profile
from ..core.degradation import DEGRADATIONS
from ..core.disk_measures import summarize
from ..core.errors import InputError
from ..core.outputs import safe_name
from ..core.progress import drive
from .upscale import add_intensity_option, add_profile_option

DEFAULT_METHODS = f"{BICUBIC},{metrics.PRETRAINED}"


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score upscaling methods against high-resolution images (PSNR, SSIM)",
        description=(
            "Upscale low-resolution images x4 with each method and score the results against the "
            "high-resolution references: PSNR, SSIM, and the gain in dB and % over bicubic and over the "
            f"pretrained model: a fine-tuned run's own parent (evaluated too), else {metrics.PRETRAINED}; "
            "and the LR consistency of each output (degraded back, how well it reproduces its LR image; no "
            "HR needed). The low-resolution images are the given --lr acquisitions (e.g. the <stem>_lr.tif "
            "of 'microdisk-sr register', with its <stem>_hr.tif as HR), "
            "or are made from the references by --degradation. Writes a CSV table, a JSON file beside it, "
            "and prints the table."
        ),
    )
    parser.add_argument(
        "hr",
        nargs="*",
        type=Path,
        metavar="HR",
        help="high-resolution reference images; none with --lr: LR images alone (no PSNR/SSIM, only the LR "
        "consistency and, with --per-disk, the disks measured on each LR image and every output)",
    )
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
    parser.add_argument(
        "--per-disk",
        action="store_true",
        help="also detect the disks of each HR image and measure each one on the HR and on every output: "
        "centre, radius and edge width (10-90 %%) in HR pixels, and PSNR/SSIM in the disk's box; writes "
        "<out stem>_disks.csv beside the table and prints a summary per method",
    )
    add_profile_option(parser)
    add_intensity_option(
        parser, default="each model its own if it was fine-tuned, else auto; the scores by auto"
    )
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
    if not args.hr and args.lr is None:
        raise InputError("give HR images, --lr images, or both")
    if not args.hr and args.error_maps is not None:
        raise InputError("--error-maps needs HR images: an error is measured against a reference")
    if args.hr and args.lr is not None and len(args.lr) != len(args.hr):
        raise InputError(f"{len(args.hr)} HR image(s) but {len(args.lr)} --lr image(s): give one LR per HR")
    if args.out is None:
        csv_path = outputs.metrics_path_for(source_path=(args.hr or args.lr)[0])
    elif args.out.suffix.lower() != ".csv":
        raise InputError(f"--out {args.out} must be a .csv file (the JSON is written beside it)")
    else:
        csv_path = outputs.free_table_path(args.out)
    degradation = AREA if args.profile is None else read_profile(args.profile)
    io.refuse_input_as_output(csv_path, [*args.hr, *(args.lr or [])])
    io.ensure_writable_dir(csv_path.parent)
    if args.error_maps is not None:
        io.ensure_writable_dir(args.error_maps)

    hr_files = [io.read_image(path) for path in args.hr]
    lr_images = None if args.lr is None else [io.read_image(path).data for path in args.lr]
    names = _unique_names([path.stem for path in args.hr or args.lr])
    job = metrics.evaluate(
        [f.data for f in hr_files] if hr_files else None,
        methods,
        lr_images=lr_images,
        degradation=args.degradation,
        names=names,
        device=args.device,
        tile=args.tile,
        error_maps=args.error_maps is not None,
        seed=args.seed,
        intensity=args.intensity,
        consistency=degradation,
        per_disk=args.per_disk,
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
    print(f"\nLR consistency: outputs degraded back with {result.consistency}")
    print(f"wrote {csv_path} and {json_path}")
    if args.per_disk:
        _report_disks(result, result.to_disk_csv(csv_path.with_name(f"{csv_path.stem}_disks.csv")))
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


def _report_disks(result: EvalResult, path: Path) -> None:
    """Print the summary per method of the per-disk table written to ``path`` (HR pixels)."""
    print(f"\nper disk ({path}), in HR pixels:")
    print(f"{'method':<24} {'disks':>7} {'median |r error|':>17} {'median edge width error':>24}")
    for line in summarize(result.disk_rows):
        r_error, width_error = line["median_abs_r_error"], line["median_edge_width_error"]
        r_text = "-" if r_error is None else f"{r_error:.2f}"
        width_text = "-" if width_error is None else f"{width_error:+.2f}"
        print(f"{line['method']:<24} {line['disks']:>7} {r_text:>17} {width_text:>24}")


def _unique_names(stems: list[str]) -> list[str]:
    """Image names from file stems, made unique (and never the mean rows' name) with -2, -3, ..."""
    names: list[str] = []
    for stem in stems:
        name, n = stem, 1
        while name in names or name == MEAN:
            n += 1
            name = f"{stem}-{n}"
        names.append(name)
    return names
