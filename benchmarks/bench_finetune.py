"""Fine-tuning throughput: ours (``core.train.fine_tune``) against a plain PyTorch loop of the study's recipe.

The plain loop is what a study's script does: 500 (LR, HR) pairs of 128 px HR patches cut from the crops and
made up front with bicubic down-sampling (numpy arrays, not timed), a shuffled ``DataLoader`` over them (no
workers), the network (basicsr's when it is installed, else ours) in float32, Adam (lr 1e-4), L1 loss, and
``loss.item()`` logged every step. Ours is ``fine_tune`` with its defaults, which are that recipe (pairs drawn
afresh each step: random patch, flips and turns, bicubic; Adam; L1), except for the batch size (the same for
both), no validation split (the plain loop has none) and one epoch of 25,000 pairs (so that no epoch-end
checkpoint falls among the timed steps; they are timed apart). Ours makes its pairs inside the timed steps.
Its default precision is float32, except on CPUs with native bfloat16, where it trains under bfloat16
autocast (the ``precision`` column says which).

Both start from the same pretrained weights and train on the same crops (disks cut from synthetic scenes),
in one process. After warm-up steps (not timed) they take turns, a few steps each, the order alternating.
Speed is the batch size over the seconds per step of the fastest turn (other processes only add time; the
median turn is reported too).
The study's recipe is 25,000 samples (50 epochs x 500 pairs): its time is extrapolated from that speed,
plus, for ours, 50 checkpoints (one per epoch; measured as the checkpoint written when the run is stopped).
Ours also runs at its other precision, to separate the training loop from the precision: in float32 where
its default autocasts, and in mixed precision on CUDA (off by default there).

Usage: ``python benchmarks/bench_finetune.py [--quick] [--device DEV] [--threads N]``
"""

import dataclasses
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import _common
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from napari_microdisk_sr.core.crops import crop_disks
from napari_microdisk_sr.core.degradation import degrade
from napari_microdisk_sr.core.device import describe_device
from napari_microdisk_sr.core.models import REGISTRY
from napari_microdisk_sr.core.progress import StopFlag, drive
from napari_microdisk_sr.core.sample import make_scene
from napari_microdisk_sr.core.train import EventKind, FineTuneConfig, autocast_dtype, fine_tune
from napari_microdisk_sr.core.weights import embedded_weights, read_state_dict

NAME = "bench_finetune"
RECIPE_EPOCHS, RECIPE_PAIRS = 50, 500
RECIPE_SAMPLES = RECIPE_EPOCHS * RECIPE_PAIRS
PATCH, SCALE = 128, 4
PLAIN = "plain"
DEFAULT_AMP = FineTuneConfig().amp


@dataclasses.dataclass(frozen=True)
class Case:
    """One model to time.

    Attributes
    ----------
    model : str
        Registry name.
    batch : int
        Pairs per step, for every implementation.
    warmup : int
        Steps run first and not timed.
    steps : int
        Timed steps of each implementation (at least).
    turn : int
        Steps each implementation runs in its turn (at least).
    """

    model: str
    batch: int
    warmup: int
    steps: int
    turn: int


QUICK = (
    Case("realesrgan-x4plus", batch=2, warmup=1, steps=5, turn=1),
    Case("realesr-animevideov3", batch=4, warmup=2, steps=12, turn=4),
)
FULL = (
    Case("realesrgan-x4plus", batch=4, warmup=10, steps=100, turn=20),
    Case("realesr-animevideov3", batch=4, warmup=10, steps=100, turn=20),
)


def training_crops() -> list[np.ndarray]:
    """HR crops of whole disks (uint8 RGB, 161 to 241 px) from three synthetic scenes."""
    crops = []
    for seed in (1, 2, 3):
        scene = make_scene(seed=seed, size=(192, 192), radius=(16, 24), rgb=True)
        crops += [crop.image for crop in crop_disks(scene.hr, scene.disks_hr)]
    return crops


class Ours:
    """A ``fine_tune`` job, driven step by step through its events."""

    network = "core.archs"

    def __init__(
        self,
        case: Case,
        crops: Sequence[np.ndarray],
        device: torch.device,
        run_dir: Path,
        *,
        amp: bool = DEFAULT_AMP,
    ) -> None:
        dtype = autocast_dtype(device, amp)
        self.precision = "fp32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"
        # The whole recipe as one epoch, so that no epoch ends (with its checkpoint) inside the timed steps;
        # the checkpoints are timed apart (stop_seconds). Pairs are made per step either way.
        config = FineTuneConfig(
            model=case.model,
            epochs=1,
            pairs_per_epoch=RECIPE_SAMPLES,
            batch_size=case.batch,
            val_fraction=0.0,
            amp=amp,
            device=str(device),
        )
        self.stop = StopFlag()
        self.job = fine_tune(crops, config, run_dir, stop=self.stop)
        self.step = 0
        self._expect(next(self.job), EventKind.STARTED)  # the model and the crops are loaded

    @staticmethod
    def _expect(event: Any, kind: EventKind) -> None:
        if event.kind is not kind:
            raise RuntimeError(
                f"fine_tune: expected a {kind.value} event, got {event.kind.value}: {event.message}"
            )

    def advance(self, steps: int) -> int:
        """Train at least ``steps`` more steps (to the next progress event); return the steps done."""
        start = self.step
        while self.step < start + steps:
            event = next(self.job)
            self._expect(event, EventKind.STEP)
            self.step = event.step
        return self.step - start

    def stop_seconds(self) -> float:
        """Stop the job; return the seconds it takes to write its checkpoint, then let it finish."""
        self.stop.set()
        start = time.perf_counter()
        self._expect(next(self.job), EventKind.CHECKPOINT)
        seconds = time.perf_counter() - start
        drive(self.job)
        return seconds


def reference_network(model: str) -> tuple[nn.Module, str]:
    """The pretrained network as a study's script builds it: basicsr's class if installed, else ours."""
    spec = REGISTRY[model].spec
    archs, why = _common.import_basicsr()
    if why:
        network, origin = spec.build(), f"core.archs ({why})"
    else:
        module = archs.rrdbnet_arch if spec.arch == "RRDBNet" else archs.srvgg_arch
        network, origin = getattr(module, spec.arch)(**spec.kwargs), "basicsr.archs"
    network.load_state_dict(read_state_dict(embedded_weights(model)))
    return network, origin


def plain_pairs(
    crops: Sequence[np.ndarray], count: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` (LR, HR) float32 CHW pairs: a random 128 px patch of a random crop and its bicubic x1/4."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        crop = crops[rng.integers(len(crops))]
        y, x = (int(rng.integers(n - PATCH + 1)) for n in crop.shape[:2])
        hr = crop[y : y + PATCH, x : x + PATCH].astype(np.float32) / 255.0
        lr = degrade(hr, kind="bicubic", scale=SCALE)
        pairs.append((lr.transpose(2, 0, 1).copy(), hr.transpose(2, 0, 1).copy()))
    return pairs


def plain_loop(
    network: nn.Module, pairs: Sequence[Any], *, batch: int, device: torch.device
) -> Iterator[float]:
    """The study's training loop, written plainly; yields each step's loss."""
    loader = DataLoader(pairs, batch_size=batch, shuffle=True, drop_last=True)
    network = network.to(device).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
    while True:
        for lr, hr in loader:
            lr, hr = lr.to(device), hr.to(device)
            loss = F.l1_loss(network(lr), hr)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            yield loss.item()


class Plain:
    """The plain loop, stepped on demand."""

    precision = "fp32"

    def __init__(self, case: Case, crops: Sequence[np.ndarray], device: torch.device) -> None:
        network, self.network = reference_network(case.model)  # the module and where its class comes from
        self.loop = plain_loop(network, plain_pairs(crops, RECIPE_PAIRS), batch=case.batch, device=device)

    def advance(self, steps: int) -> int:
        for _ in range(steps):
            next(self.loop)
        return steps


def other_amp(device: torch.device) -> "bool | None":
    """The ``amp`` setting that gives ours the other precision on ``device``, if that one is worth timing.

    float32 where the default autocasts (CPUs with native bfloat16); mixed precision on CUDA where the
    default is float32; None on CPUs that would only emulate bfloat16.
    """
    if autocast_dtype(device, DEFAULT_AMP) is not None:
        return False
    return True if device.type == "cuda" else None


def bench_case(
    case: Case, crops: Sequence[np.ndarray], device: torch.device, tmp: Path
) -> list[dict[str, Any]]:
    """Time ours, ours at its other precision (see the module notes) and the plain loop; one row each."""
    contenders: dict[str, Any] = {"ours": Ours(case, crops, device, tmp / f"{case.model}-ours")}
    other = other_amp(device)
    if other is not None:
        contenders[f"ours amp={other}"] = Ours(
            case, crops, device, tmp / f"{case.model}-amp{other}", amp=other
        )
    contenders[PLAIN] = Plain(case, crops, device)
    for contender in contenders.values():
        contender.advance(case.warmup)
    turns: dict[str, list[tuple[int, float]]] = {name: [] for name in contenders}  # (steps, seconds)
    peaks: dict[str, list[int]] = {name: [] for name in contenders}
    for turn in range(-(-case.steps // case.turn)):
        for name in list(contenders) if turn % 2 == 0 else list(reversed(contenders)):
            elapsed, done, peak = _common.measured(lambda c=contenders[name]: c.advance(case.turn), device)
            turns[name].append((done, elapsed))
            if peak is not None:
                peaks[name].append(peak)
    rows = []
    for name, contender in contenders.items():
        s_per_step, median_s = _common.best_and_median([seconds / done for done, seconds in turns[name]])
        samples_per_s = case.batch / s_per_step
        checkpoint_s = contender.stop_seconds() if isinstance(contender, Ours) else None
        recipe_s = RECIPE_SAMPLES / samples_per_s + RECIPE_EPOCHS * (checkpoint_s or 0.0)
        rows.append(
            {
                "model": case.model,
                "impl": name,
                "precision": contender.precision,
                "batch": case.batch,
                "steps": sum(done for done, _ in turns[name]),
                "s_per_step": s_per_step,
                "median_s_per_step": median_s,
                "samples_per_s": samples_per_s,
                "checkpoint_s": checkpoint_s,
                "recipe_min": recipe_s / 60,
                "peak_mib": max(peaks[name]) / 2**20 if peaks[name] else None,
                "network": contender.network,
            }
        )
    return rows


def main() -> int:
    args = _common.parse_args(__doc__.splitlines()[0])
    device = _common.setup(args)
    cases = QUICK if args.quick else FULL
    crops = training_crops()
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        rows = [row for case in cases for row in bench_case(case, crops, device, Path(tmp))]
    by_key = {(row["model"], row["impl"]): row for row in rows}
    ratios = {
        case.model: by_key[(case.model, PLAIN)]["recipe_min"] / by_key[(case.model, "ours")]["recipe_min"]
        for case in cases
    }
    print(
        f"fine-tuning throughput, {PATCH} px HR patches, {len(crops)} crops, {describe_device(device)}; "
        f"recipe = {RECIPE_SAMPLES:,} samples"
    )
    _common.print_table(
        rows,
        (
            "model",
            "impl",
            "precision",
            "batch",
            "steps",
            "s_per_step",
            "median_s_per_step",
            "samples_per_s",
            "checkpoint_s",
            "recipe_min",
            "peak_mib",
        ),
    )
    print(f"(plain loop's network: {rows[-1]['network']}; peak memory: {_common.MEMORY.get(device.type)})")
    for model, ratio in ratios.items():
        print(f"recipe time, plain / ours, {model}: {ratio:.3f}")
    path = _common.write_results(
        NAME,
        device,
        folder=args.results,
        payload={
            "settings": {
                "quick": args.quick,
                "cases": [dataclasses.asdict(c) for c in cases],
                "patch": PATCH,
            },
            "memory": _common.MEMORY.get(device.type),
            "rows": rows,
            "ratios": ratios,
        },
    )
    print(f"results: {path}")
    print(f"ratio: {ratios[cases[0].model]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
