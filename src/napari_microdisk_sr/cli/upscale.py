"""``microdisk-sr upscale``: super-resolve images x4 into TIFFs, or block by block into OME-Zarr; never
overwriting."""

import argparse
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from ..core import batch, distributed, distributed_blocks, infer, io, lazy, ome_zarr
from ..core.consistency import AREA, BackDegradation, read_profile
from ..core.device import DEVICE_CHOICES, describe_device, resolve_device
from ..core.errors import InputError
from ..core.images import Normalization
from ..core.intensity import Intensity
from ..core.models import DEFAULT_MODEL, REGISTRY, LoadedModel, load_model
from ..core.progress import drive
from ..core.regions import Region
from ..core.weights import file_sha256


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "upscale",
        help="super-resolve images x4 into TIFFs",
        description=(
            "Super-resolve each INPUT (TIFF, PNG, JPEG; gray, RGB or RGBA; T/Z stacks plane by plane) "
            "with a model and write <stem>_x4.tif with the input's dtype and value range, and its pixel "
            "size divided by 4. Outputs go into --out, by default into <stem>_microdisk_sr/ beside each "
            "input; an existing file is never overwritten (-1, -2, ... is added). All inputs and the output "
            "folders are checked before any work starts. A rerun skips every input whose output is already "
            "there with the same provenance (input and weights SHA-256, settings). With --format ome-zarr, "
            "inputs are read lazily (Zarr stores, TIFFs by tile) and each result is written block by block "
            "into <stem>_x4.ome.zarr with a pyramid: memory is bounded by the block, not the image; a killed "
            "or failed run of it is resumed by the same command (the blocks written are kept)."
        ),
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, Zarr stores (.zarr, .ome.zarr), folders (their images, not recursive) or quoted "
        "patterns ('plate/*.tif')",
    )
    parser.add_argument(
        "--format",
        choices=("tiff", "ome-zarr"),
        default="tiff",
        help="tiff: <stem>_x4.tif, computed in memory; ome-zarr: <stem>_x4.ome.zarr (OME-NGFF multiscales), "
        "written block by block for images larger than memory (default: tiff)",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="NAME|PATH",
        help=f"a model name ({', '.join(REGISTRY)}), a .pth/.safetensors file or a BioImage Model Zoo "
        f"package (.zip) (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output folder (default: <stem>_microdisk_sr/ beside each input)",
    )
    parser.add_argument(
        "--tile",
        type=int,
        default=infer.DEFAULT_TILE,
        metavar="N",
        help="tile side in input pixels; 0 = whole images, fastest but most memory "
        f"(default: {infer.DEFAULT_TILE})",
    )
    parser.add_argument(
        "--tile-pad",
        type=int,
        metavar="N",
        help="overlap around each tile in input pixels (default: the model's, from its receptive field)",
    )
    parser.add_argument(
        "--device", choices=DEVICE_CHOICES, default="auto", help="where to run (default: auto)"
    )
    parser.add_argument(
        "--half",
        action="store_true",
        help="half precision, a fast preview: float16 on CUDA, bfloat16 on CPUs that compute it natively "
        "(about 2x faster there); ignored elsewhere",
    )
    parser.add_argument(
        "--consistency",
        action="store_true",
        help="also check each output against its input: degraded back (area averaging, or --profile), it "
        "must reproduce the input; writes <stem>_x4_consistency.tif beside the output (|degrade(SR) - LR| "
        "in fractions of the data range) and records the PSNR in the output's provenance",
    )
    add_profile_option(parser)
    add_intensity_option(parser, default="the model's own if it was fine-tuned, else auto")
    parser.add_argument(
        "--region",
        metavar="Y0:Y1,X0:X1",
        help="upscale only this window of each input (input pixels; every plane of a stack), a preview equal "
        "to the same window of the whole result: written as <stem>_x4_Y0-Y1_X0-X1.tif",
    )
    parser.add_argument(
        "--redo",
        action="store_true",
        help="upscale even the inputs whose output is there with the same provenance (into a numbered file), "
        "and start OME-Zarr stores anew, deleting an interrupted run's instead of resuming it",
    )
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="process only the I-th of N deterministic slices of the sorted inputs (from 1): N array jobs or "
        "machines sharing a file system split a plate with no coordinator",
    )
    parser.add_argument(
        "--scheduler",
        metavar="SPEC",
        help="run the files as tasks on a dask.distributed cluster (the [distributed] extra), or with "
        "--format ome-zarr every block of every image: local:N starts N worker processes here; "
        "tcp://HOST:PORT or a scheduler file (JSON) joins a running cluster, e.g. dask-jobqueue's on "
        "SLURM/LSF or dask-cuda's on a multi-GPU node. Workers read and write the files themselves (a "
        "shared file system), load the model once each and give the same bits as one process; a lost "
        "worker's task is recomputed by another",
    )
    parser.set_defaults(func=run)


def add_profile_option(parser: argparse.ArgumentParser) -> None:
    """``--profile PROFILE.json``, shared by consistency, upscale and evaluate."""
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="PROFILE.json",
        help="for the LR-consistency check: a calibrated degradation profile (microdisk-sr calibrate) whose "
        "PSF, down-sampling, gain and offset degrade the SR image back (default: area averaging, no blur)",
    )


def add_intensity_option(parser: argparse.ArgumentParser, *, default: str = "auto") -> None:
    """``--intensity MODE``, the value mapping, shared by every subcommand that maps image values: its text,
    read by :meth:`Intensity.parse` (whose errors say what to give); None when not given, ``default``
    says in the help what that means."""
    parser.add_argument(
        "--intensity",
        metavar="MODE",
        help="how image values map to the network's 0-1 and back: auto (uint8 by its range, every other "
        "dtype by percentile), range (uint8/uint16 by the dtype's full range, others by their min/max), "
        "bits:N (0 to 2^N-1, e.g. bits:12 for a 12-bit camera writing 16-bit files), percentile or "
        "percentile:LOW,HIGH (the image's 1st-99.8th percentiles map to 0-1, as in CSBDeep; the output is "
        f"mapped back and keeps brighter peaks) (default: {default}); give the same to finetune, upscale "
        "and evaluate",
    )


def run(args: argparse.Namespace) -> int:
    config = infer.UpscaleConfig(
        tile=args.tile, tile_pad=args.tile_pad, device=args.device, half=args.half, intensity=args.intensity
    )
    region = None if args.region is None else Region.parse(args.region)
    scheduler = None if args.scheduler is None else distributed.Scheduler.parse(args.scheduler)
    inputs = batch.expand_inputs(args.inputs)
    if args.shard is not None:
        inputs = batch.shard(inputs, *batch.parse_shard(args.shard))
    if args.profile is not None and not args.consistency:
        raise InputError("--profile is for the consistency check: add --consistency")
    if args.consistency and region is not None:
        raise InputError("--consistency checks whole images: leave out --region, or check the window later")
    to_zarr = args.format == "ome-zarr"
    if to_zarr and (region is not None or args.consistency):
        raise InputError("--region and --consistency write TIFFs: leave them out with --format ome-zarr")
    stores = [path for path in inputs if lazy.is_store(path)]
    if stores and not to_zarr:
        raise InputError(
            f"{stores[0]} is a Zarr store: its result is written as OME-Zarr, add --format ome-zarr"
        )
    degradation = AREA if args.profile is None else read_profile(args.profile)
    device = resolve_device(config.device)
    device_text = describe_device(device)
    model = load_model(args.model)  # on the CPU: each upscale job moves its own copy to the device
    config = dataclasses.replace(config, intensity=infer.intensity_for(model, config.intensity))
    scale = model.spec.scale
    window = "" if region is None else f"_{region.y0}-{region.y1}_{region.x0}-{region.x1}"
    suffix = ".ome.zarr" if to_zarr else ".tif"
    targets = [
        (args.out or io.output_dir_for(path)) / f"{io.image_stem(path)}_x{scale}{window}{suffix}"
        for path in inputs
    ]
    for target in targets:
        io.refuse_input_as_output(target, inputs)
    for folder in dict.fromkeys(target.parent for target in targets):
        io.ensure_writable_dir(folder)
    settings = batch.output_settings(model, config, device, region)

    jobs = [
        batch.FileJob(
            path,
            target,
            settings | _identity(path),
            config,
            region,
            degradation if args.consistency else None,
        )
        for path, target in zip(inputs, targets, strict=True)
    ]
    todo = [job for job in jobs if args.redo or batch.is_done(job) is None]  # only these are read, computed
    if to_zarr and scheduler is None:
        norms = [_check_lazy_input(job.path, config.intensity) for job in todo]  # before any work
        print(f"upscaling x{scale} with {model.name} on {device_text} into OME-Zarr")
        for job, norm in zip(todo, norms, strict=True):
            _upscale_to_ome_zarr(job, norm, model, resume=not args.redo)
    elif scheduler is None:
        for job in todo:  # check every input to compute before any work; the pixels are read again below
            batch.check_input(job.path, config.intensity, region)
        print(f"upscaling x{scale} with {model.name} on {device_text}")
        for job in todo:
            with tqdm(desc=job.path.name, unit="tile", leave=False) as bar:
                done = batch.upscale_file(job, model, on_event=_progress_on(bar))
            _report(done, degradation, print)
    elif todo:  # a cluster is started or joined only for work to do
        with distributed.connect(scheduler) as client:
            where = distributed.describe(client)
            if to_zarr:
                print(f"upscaling x{scale} with {model.name} on {where} into OME-Zarr, a task per block")
                _upscale_stores_on(client, todo, args.model, model.sha256, resume=not args.redo)
            else:
                print(f"upscaling x{scale} with {model.name} on {where}")
                files = distributed.upscale_files(client, todo, args.model, model.sha256, redo=args.redo)
                with tqdm(total=len(todo), unit="file") as bar:
                    for done in files:
                        bar.update()
                        _report(done, degradation, bar.write)
    _report_skipped(len(inputs) - len(todo), len(inputs))
    return 0


def _report(done: batch.FileDone, degradation: BackDegradation, write: Callable[[str], None]) -> None:
    """Say what was written for one input."""
    if done.seconds is None:
        write(f"{done.path} -> {done.output} (written by an earlier attempt)")
        return
    shapes = ["x".join(map(str, shape)) for shape in (done.input_shape, done.output_shape)]
    write(f"{done.path} ({shapes[0]}) -> {done.output} ({shapes[1]}) in {done.seconds:.1f} s")
    if done.consistency_map is not None:
        check = f"{done.consistency_psnr:.2f} dB ({degradation.describe()})"
        write(f"  LR consistency {check} -> {done.consistency_map}")


def _upscale_stores_on(
    client: "distributed.Client", jobs: list[batch.FileJob], model: str, sha256: str, *, resume: bool
) -> None:
    """Upscale into OME-Zarr on a cluster, one bar over the blocks of every input."""
    with tqdm(unit="block") as bar:
        for event in distributed_blocks.upscale_stores(client, jobs, model, sha256, resume=resume):
            bar.total = event.total
            bar.update(event.done - bar.n)
            if event.finished is not None:
                path, result = event.finished
                shape = "x".join(map(str, result.shapes[0]))
                bar.write(f"{path} -> {result.path} ({shape}, {len(result.shapes)} levels){_resumed(result)}")


def _report_skipped(skipped: int, count: int) -> None:
    if skipped:
        print(f"skipped {skipped} of {count} input(s) whose output was there with the same provenance")


def _identity(path: Path) -> dict[str, "str | None"]:
    """What identifies an input's pixels in provenance: a file's SHA-256, a Zarr store's cheap identity."""
    if lazy.is_store(path):
        return {"input_sha256": None, "input_identity": lazy.store_identity(path)}
    return {"input_sha256": file_sha256(path)}


def _check_lazy_input(path: Path, intensity: Intensity) -> tuple[Normalization, "Normalization | None"]:
    """Open an input lazily and compute its value mapping (reading it chunk by chunk where that needs its
    values); refuse it naming the file."""
    try:
        return lazy.lazy_normalizations(lazy.open_lazy(path), intensity=intensity)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def _upscale_to_ome_zarr(
    job: batch.FileJob,
    norms: tuple[Normalization, "Normalization | None"],
    model: LoadedModel,
    *,
    resume: bool,
) -> None:
    """Upscale one input block by block into its target (an OME-Zarr image), with a progress bar; an
    interrupted run's store of the same job is taken over unless ``resume`` is false."""
    path = job.path
    image = lazy.open_lazy(path)
    started = time.perf_counter()
    record = {"input_path": str(path.resolve())} | {
        k: v for k, v in job.made_with.items() if k.startswith("input")
    }
    upscaling = ome_zarr.upscale_to_ome_zarr(
        image, model, job.target, config=job.config, norms=norms, record=record, resume=resume
    )
    with tqdm(desc=path.name, unit="block", leave=False) as bar:
        result = drive(upscaling, _progress_on(bar))
    seconds = time.perf_counter() - started
    shape = "x".join(map(str, image.data.shape))
    out_shape = "x".join(map(str, result.shapes[0]))
    made = f"{result.path} ({out_shape}, {len(result.shapes)} levels) in {seconds:.1f} s{_resumed(result)}"
    print(f"{path} ({shape}) -> {made}")


def _resumed(result: ome_zarr.OmeZarrResult) -> str:
    """What a result kept from an interrupted run's store, to add to its line."""
    return f"; resumed: {result.reused} block(s) kept from an interrupted run" if result.reused else ""


def _progress_on(bar: tqdm) -> Callable[[infer.TileEvent], None]:
    """Show tile events on ``bar`` (after an out-of-memory restart the count goes back, the total changes)."""

    def show(event: infer.TileEvent) -> None:
        bar.total = event.total
        if event.planes > 1:
            bar.set_postfix_str(f"plane {event.plane + 1}/{event.planes}", refresh=False)
        bar.update(event.done - bar.n)

    return show
