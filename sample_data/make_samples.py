"""Make the files of ``sample_data/`` from the package's synthetic microdisk scenes (deterministic).

    python sample_data/make_samples.py [--out DIR]

Writes, with their pixel sizes in the TIFF resolution tags (micrometres, as ImageJ/Fiji reads them):

- ``pair_4x.tif`` / ``pair_4x_hr.tif``: a 4X-like acquisition (uint8, 96 x 96, 1.625 um pixels) and its x4
  high-resolution truth (384 x 384, 0.40625 um pixels) of the same field;
- ``field_12bit.tif``: a 12-bit camera's field stored in a 16-bit TIFF (values 0 to 4095; give the bit depth
  12 to fine-tuning, super-resolution and measurement), reflected light on a dark substrate;
- ``cross_4x.tif`` / ``cross_10x_window.tif``: a 4X field (128 x 128, 1.625 um) and a 10X acquisition of a
  window of it (160 x 160, 0.65 um pixels: 2.5 x finer), starting at 4X pixel (y, x) = WINDOW_ORIGIN.

An existing file is never overwritten: write into an empty folder (the test suite checks that the committed
files are what this script makes).
"""

import argparse
from pathlib import Path

import cv2
import numpy as np

from napari_microdisk_sr.core.io import PixelSize, write_tiff
from napari_microdisk_sr.core.sample import make_scene

PIXEL_4X = 1.625
"""Micrometres per pixel of a 4X objective on a camera of 6.5 um pixels."""
CROSS_RATIO = 2.5
"""10X / 4X."""
WINDOW_ORIGIN = (24, 32)
"""Where the 10X window starts, in pixels of the 4X field (y, x)."""
WINDOW_4X = 64
"""The 10X window's side in 4X pixels (160 pixels at 10X)."""


def make_samples(out: Path) -> list[Path]:
    """Write the sample files into ``out`` (created if needed); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    lr_size = PixelSize(PIXEL_4X, PIXEL_4X, "um")
    pair = make_scene(seed=11, size=(96, 96))
    twelve = make_scene(seed=12, size=(128, 128), dtype="uint16", background="dark")
    field_4x, window_10x = _cross_magnification(seed=13)
    return [
        write_tiff(out / "pair_4x.tif", pair.lr, pixel_size=lr_size),
        write_tiff(out / "pair_4x_hr.tif", pair.hr, pixel_size=lr_size.scaled(1 / pair.scale)),
        write_tiff(out / "field_12bit.tif", twelve.lr >> 4, pixel_size=lr_size),
        write_tiff(out / "cross_4x.tif", field_4x, pixel_size=lr_size),
        write_tiff(out / "cross_10x_window.tif", window_10x, pixel_size=lr_size.scaled(1 / CROSS_RATIO)),
    ]


def _cross_magnification(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 4X field and a 10X image of a window of it: the scene's 20X truth, area-averaged by 2 (10X)."""
    scene = make_scene(seed=seed, size=(128, 128), scale=5)
    y, x = (5 * v for v in WINDOW_ORIGIN)
    side = 5 * WINDOW_4X
    truth = scene.hr[y : y + side, x : x + side]
    window = cv2.resize(truth, (side // 2, side // 2), interpolation=cv2.INTER_AREA)
    return scene.lr, window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="folder (default: here)")
    for path in make_samples(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
