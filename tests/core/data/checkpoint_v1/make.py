"""Write a small fine-tuning checkpoint with the code before the train package (commit 5b63e1b)."""

import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from napari_microdisk_sr.core.models import ModelSpec, save_model
from napari_microdisk_sr.core.progress import StopFlag
from napari_microdisk_sr.core.train import FineTuneConfig, fine_tune

out = Path(sys.argv[1])
torch.manual_seed(0)
spec = ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 4})
model = save_model(spec.build(), spec, out / "parent.pth")
rng = np.random.default_rng(0)
yy, xx = np.mgrid[:32, :32]
crops = []
for i in range(4):
    disk = ((yy - 16 + i) ** 2 + (xx - 15) ** 2 < (8 + i) ** 2).astype(np.float64)
    crops.append(np.clip(40 + 160 * disk + rng.normal(0, 8, (32, 32)), 0, 255).astype(np.uint8))
np.save(out / "crops.npy", np.stack(crops))
config = FineTuneConfig(
    model=str(model),
    epochs=3,
    pairs_per_epoch=8,
    batch_size=2,
    patch=16,
    val_fraction=0.25,
    ema=True,
    amp=False,
    device="cpu",
    seed=3,
    degradation="realistic",
)
run_dir = out / "run"


class StopAfter(StopFlag):
    def __init__(self, n):
        super().__init__()
        self.n = n

    def is_set(self):
        self.n -= 1
        return self.n < 0


job = fine_tune(crops, config, run_dir, stop=StopAfter(7))
try:
    while True:
        next(job)
except StopIteration as s:
    print(s.value.state, s.value.message)
for name in ("model.pth", "model.json", "history.csv", "weight_change.csv"):
    (run_dir / name).unlink()
shutil.copytree(run_dir, out / "resumed")
job = fine_tune(crops, config, out / "resumed", resume=True)
try:
    while True:
        next(job)
except StopIteration as s:
    print(s.value.state, s.value.message)
weights = torch.load(out / "resumed" / "model.pth", weights_only=True)["params_ema"]
torch.save(weights, out / "expected_weights.pth")
shutil.rmtree(out / "resumed")
