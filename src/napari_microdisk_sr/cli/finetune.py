"""``microdisk-sr finetune``: fine-tune a model on a folder of microdisk crops, resumably."""

import argparse
import contextlib
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..core import train
from ..core.crops import read_crop_set
from ..core.degradation import DEGRADATIONS
from ..core.errors import MicrodiskSRError
from ..core.pair_config import SMALL_CROP_POLICIES
from ..core.progress import StopFlag, drive
from ..core.train import EventKind, FineTuneConfig, Outcome, TrainEvent
from .upscale import add_intensity_option

_DEFAULTS = FineTuneConfig()
# command-line option (argparse dest) -> FineTuneConfig field
_FIELDS = {
    "model": "model",
    "epochs": "epochs",
    "lr": "lr",
    "batch": "batch_size",
    "patch": "patch",
    "pairs_per_epoch": "pairs_per_epoch",
    "degradation": "degradation",
    "small_crops": "small_crops",
    "val_fraction": "val_fraction",
    "early_stop": "early_stop",
    "freeze_blocks": "freeze_blocks",
    "ema": "ema",
    "amp": "amp",
    "device": "device",
    "seed": "seed",
    "max_minutes": "max_minutes",
    "intensity": "intensity",
}
_STOPPED_EXIT = 130  # the shell's code for a job ended by Ctrl-C
_SETTING = re.compile(
    r"\b(?:(" + "|".join(field for dest, field in _FIELDS.items() if "_" in field) + r")\b"
    r"|(" + "|".join(field for dest, field in _FIELDS.items() if "_" not in field) + r")(?==))"
    r"(?:=('?)([\w.]+(?::[\w.,]*\w)?)\3)?"
)
"""A setting named as in the API (``batch_size``, ``small_crops='pad'``, ``intensity=range``; a one-word
setting only with its value): errors name its option instead."""


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a model on microdisk crops",
        description=(
            "Fine-tune a super-resolution model on the high-resolution crops of CROPS_DIR (written by "
            "'microdisk-sr crop') with the study's recipe: L1 loss, Adam, the learning rate halved every "
            "16 epochs. RUN_DIR receives model.pth (Real-ESRGAN's format: use it with --model "
            "RUN_DIR/model.pth), model.json, history.csv, weight_change.csv, config.json and a checkpoint "
            "updated after every epoch. Ctrl-C stops after the current step and saves; --resume continues "
            "exactly where the run stopped, with the run's settings (only --epochs, --max-minutes and "
            "--device may change there; other options given anew are refused). On a paired crop set "
            "('microdisk-sr crop --lr') the model learns from the set's registered LR crops, not from a "
            "--degradation. 'torchrun --nproc_per_node N -m napari_microdisk_sr.cli finetune ...' trains "
            "with N processes (one per GPU, or on the CPU), the run of one process with N times the batch."
        ),
    )
    parser.add_argument("crops", type=Path, metavar="CROPS_DIR", help="folder of crops with its crops.csv")
    parser.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="folder of the run")
    parser.add_argument(
        "--model",
        metavar="NAME|PATH",
        help=f"registry name or weights file to start from (default: {_DEFAULTS.model})",
    )
    parser.add_argument("--epochs", type=int, help=f"epochs to train (default: {_DEFAULTS.epochs})")
    parser.add_argument("--lr", type=float, help=f"Adam's learning rate (default: {_DEFAULTS.lr:g})")
    parser.add_argument(
        "--batch",
        type=int,
        help="pairs per step (default: 4 on a GPU, 2 on the CPU); under torchrun, per process: a step then "
        "trains on processes x batch pairs",
    )
    parser.add_argument(
        "--patch",
        type=int,
        help=f"HR patch side, a multiple of the model's scale (default: {_DEFAULTS.patch})",
    )
    parser.add_argument(
        "--pairs-per-epoch", type=int, help=f"training pairs per epoch (default: {_DEFAULTS.pairs_per_epoch})"
    )
    parser.add_argument(
        "--degradation",
        metavar="{" + ",".join(DEGRADATIONS) + "} or PROFILE.json",
        help="how LR patches are made: the study's bicubic, generic blur + camera pixels + sensor noise "
        "(realistic), or your microscope's profile written by 'microdisk-sr calibrate' "
        f"(default: {_DEFAULTS.degradation})",
    )
    parser.add_argument(
        "--small-crops",
        choices=SMALL_CROP_POLICIES,
        help=f"crops smaller than the patch: mirror-pad them or refuse (default: {_DEFAULTS.small_crops})",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        help=f"share of the disks kept for validation, 0 for none (default: {_DEFAULTS.val_fraction:g})",
    )
    parser.add_argument(
        "--early-stop",
        type=int,
        nargs="?",
        const=train.DEFAULT_PATIENCE,
        metavar="N",
        help="stop when the validation L1 has not improved for N epochs and keep the best weights "
        f"(N default: {train.DEFAULT_PATIENCE}; default: off)",
    )
    parser.add_argument(
        "--layer-lr",
        action="store_true",
        default=None,
        help="the study's layer-wise learning rates: "
        + ", ".join(f"{g} {lr:g}" for g, lr in zip(train.LAYER_GROUPS, train.STUDY_LAYER_LRS, strict=True)),
    )
    parser.add_argument(
        "--freeze-blocks",
        type=int,
        metavar="N",
        help="freeze the first convolution and the first N blocks (default: 0)",
    )
    parser.add_argument(
        "--ema",
        action="store_true",
        default=None,
        help=f"save an exponential moving average of the weights (decay {_DEFAULTS.ema_decay:g})",
    )
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mixed precision (default: bfloat16 on CPUs that compute it natively, float32 elsewhere; "
        "--amp also on CUDA: bfloat16, else float16; --no-amp: float32 everywhere)",
    )
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument(
        "--seed", type=int, help=f"seed of the pairs and the split (default: {_DEFAULTS.seed})"
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="stop cleanly after M minutes, saving (default: no limit)",
    )
    add_intensity_option(parser, default="auto: a --degradation profile's own, or the resumed run's own")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in RUN_DIR from its checkpoint"
    )
    parser.set_defaults(func=run)


def _config(args: argparse.Namespace) -> FineTuneConfig:
    """The run's settings: the defaults, or the run's own when resuming, with the options given."""
    base = train.read_run_config(args.out) if args.resume else _DEFAULTS
    changes: dict[str, Any] = {
        field: getattr(args, option) for option, field in _FIELDS.items() if getattr(args, option) is not None
    }
    if args.layer_lr:
        changes["layer_lrs"] = train.STUDY_LAYER_LRS
    if args.model is not None and Path(args.model).exists():
        changes["model"] = str(Path(args.model).resolve())  # a run folder resumes from any directory
    if args.degradation is not None:
        changes["profile"] = None  # read from the file given, so that a changed profile refuses to resume
        if Path(args.degradation).is_file():
            changes["degradation"] = str(Path(args.degradation).resolve())
    return FineTuneConfig.from_json(base.to_json() | changes)


def run(args: argparse.Namespace) -> int:
    main = train.process_rank() == 0  # under torchrun, rank 0 alone reports (every process says its errors)
    try:
        config = _config(args)
        crops = read_crop_set(args.crops)
        if crops.paired and main:
            print(f"paired crop set: learning from its {len(crops)} registered LR crops (no degradation)")
        stop = StopFlag()
        job = train.fine_tune(
            crops, config, args.out, stop=stop, resume=args.resume, lr_crops=crops.lr_images
        )
        with stop_on_interrupt(stop, say=main), TrainProgress() as progress:
            result = drive(job, progress.show if main else None)
    except MicrodiskSRError as exc:
        raise type(exc)(_SETTING.sub(_as_option, str(exc))) from exc
    code = _STOPPED_EXIT if result.outcome is Outcome.STOPPED else 0
    if not main:
        return code
    print(f"{result.outcome.value}: {result.message}")
    scored = [row for row in result.history if row["val_psnr"] is not None]
    if scored:
        best = next(row for row in scored if row["epoch"] == result.best_epoch)
        print(
            f"validation PSNR: {scored[0]['val_psnr']:.2f} dB pretrained, {best['val_psnr']:.2f} dB at epoch "
            f"{best['epoch']} (lowest L1), {scored[-1]['val_psnr']:.2f} dB at epoch {scored[-1]['epoch']}"
        )
    if result.outcome in (Outcome.STOPPED, Outcome.TIME_BUDGET):
        count = train.process_count()
        launch = f"torchrun --nproc_per_node {count} -m napari_microdisk_sr.cli"
        launch = "microdisk-sr" if count == 1 else launch
        print(f"continue with: {launch} finetune {args.crops} --out {args.out} --resume")
    return code


def _as_option(match: re.Match[str]) -> str:
    """``batch_size`` -> ``--batch``; ``small_crops='pad'`` -> ``--small-crops pad``; ``early_stop=None`` ->
    ``leave out --early-stop``; ``intensity=range`` -> ``--intensity range``."""
    field, value = match.group(1) or match.group(2), match.group(4)
    option = "--" + next(dest for dest, name in _FIELDS.items() if name == field).replace("_", "-")
    if value is None:
        return option
    return f"leave out {option}" if value == "None" else f"{option} {value}"


class TrainProgress:
    """A tqdm bar over the run's steps (loss and learning rate shown), with a line per epoch."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None

    def __enter__(self) -> "TrainProgress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def show(self, event: TrainEvent) -> None:
        """Advance the bar to ``event.step``; print the run's description, scores and stops above it."""
        if event.kind is EventKind.STARTED:
            self._bar = tqdm(
                total=event.steps, initial=event.step, unit="step", desc="fine-tune", file=sys.stderr
            )
        if self._bar is None:
            return
        self._bar.update(event.step - self._bar.n)
        if event.kind is EventKind.STEP:
            self._bar.set_postfix(loss=f"{event.loss:.4f}", lr=f"{event.lr:.3g}", refresh=False)
        elif event.kind in (EventKind.STARTED, EventKind.BASELINE, EventKind.EPOCH, EventKind.STOPPED):
            self._bar.write(event.message, file=sys.stderr)


@contextlib.contextmanager
def stop_on_interrupt(stop: StopFlag, *, say: bool = True) -> Iterator[None]:
    """Turn the first Ctrl-C into a clean stop (checkpoint saved), saying so if ``say``; a second one
    aborts. torchrun passes Ctrl-C on to each of its processes: they stop after the same step."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if say:
            print("\nstopping after this step and saving (Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
