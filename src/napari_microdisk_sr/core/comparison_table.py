"""The comparison table of an evaluation (:func:`.metrics.evaluate`): PSNR/SSIM per image and method, their
gains over bicubic and over the pretrained model, the mean rows, and the table as CSV, JSON and text.

Identical images give a PSNR of ``inf``; it stays ``inf`` in :class:`EvalResult` rows and CSV files (written
``inf``), in JSON files it is the string ``"inf"`` (JSON has no infinity), and gains that are not defined
(``inf - inf``) are left empty.
"""

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import io
from .consistency import AREA
from .disk_measures import DISK_COLUMNS
from .intensity import AUTO
from .outputs import table_names

__all__ = ["BICUBIC", "COLUMNS", "MEAN", "SCALE", "EvalResult", "table_rows"]

BICUBIC = "bicubic"
"""The method name of plain bicubic interpolation (OpenCV ``INTER_CUBIC``), the baseline of every gain."""
SCALE = 4
"""The resolution ratio evaluated."""
MEAN = "mean"
"""The ``image`` of the rows averaged over all images."""
COLUMNS = (
    "image",
    "method",
    "psnr",
    "ssim",
    "gain_vs_bicubic_db",
    "gain_vs_bicubic_pct",
    "gain_vs_pretrained_db",
    "gain_vs_pretrained_pct",
    "lr_consistency_psnr",
)


@dataclass(frozen=True, eq=False)
class EvalResult:
    """The scores of an evaluation.

    Attributes
    ----------
    rows : list of dict
        One row per image and method, then (for more than one image) one per method with ``image="mean"``;
        keys are :data:`COLUMNS`.
        ``psnr`` in dB, ``ssim`` in [-1, 1], gains in dB and in % of the reference method's PSNR (for the mean
        rows, from the mean PSNRs); a gain is None when its reference method was not evaluated.
    methods : tuple of str
        The methods as given.
    images : tuple of str
        The image names.
    degradation : str or None
        How LR images were made from HR ones; None when LR images were given.
    seed : int
        Seed of the degradation.
    intensity : str
        The value mapping the scores were computed in (see :func:`.metrics.evaluate`), in its text form.
    models : dict
        For each model method: ``{"name", "source", "sha256"}`` of the weights used.
    pretrained_references : dict
        For each method, the method its ``gain_vs_pretrained`` columns compare with: a fine-tuned model's
        own parent (None when the parent was not evaluated), else :data:`.metrics.PRETRAINED`.
    error_maps : dict
        ``{(image, method): (H, W) float32 ndarray}`` of absolute errors in units of the data range (see
        :func:`.quality.abs_error`), when asked for; else empty.
    outputs : dict
        ``{(image, method): ndarray}`` of the upscaled images (in the LR image's dtype), when asked for; else
        empty.
    disk_rows : list of dict
        One row per disk, method and image (keys :data:`.disk_measures.DISK_COLUMNS`), when asked for.
    consistency : str
        How the outputs were degraded back for ``lr_consistency_psnr``, in words.
    """

    rows: list[dict[str, Any]]
    methods: tuple[str, ...]
    images: tuple[str, ...]
    degradation: "str | None"
    seed: int
    intensity: str = str(AUTO)
    models: dict[str, dict[str, str]] = field(default_factory=dict)
    pretrained_references: "dict[str, str | None]" = field(default_factory=dict)
    error_maps: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    outputs: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    disk_rows: list[dict[str, Any]] = field(default_factory=list)
    consistency: str = AREA.describe()

    def save(self, csv_path: "str | os.PathLike[str]") -> Path:
        """Write the table as CSV and JSON under ``csv_path``, or the first ``-N`` name free for both.

        The CSV claims its name as it is written (see :func:`~.outputs.table_names`), so evaluations saving
        into one folder at once each keep their table; the JSON goes beside it under the same name.

        Returns
        -------
        Path
            The CSV written; the JSON is its ``.with_suffix(".json")``.
        """
        written = io.write_csv(csv_path, self.rows, COLUMNS, names=table_names(csv_path))
        self.to_json(written.with_suffix(".json"))
        return written

    def to_csv(self, path: "str | os.PathLike[str]") -> Path:
        """Write the rows as CSV (columns :data:`COLUMNS`; ``inf`` for infinite PSNR, empty for None).

        Atomic, and never overwrites: an existing ``path`` is an :class:`~.errors.OutputError`.
        """
        return io.write_csv(path, self.rows, COLUMNS)

    def to_disk_csv(self, path: "str | os.PathLike[str]") -> Path:
        """Write the per-disk rows as CSV (:data:`.disk_measures.DISK_COLUMNS`) under ``path`` or the first
        free ``-N`` name; return the name written."""
        return io.write_csv(path, self.disk_rows, DISK_COLUMNS, names=io.numbered_paths(path))

    def to_json(self, path: "str | os.PathLike[str]") -> Path:
        """Write the rows and how they were made as JSON (infinity as ``"inf"``); atomic, never overwrites."""
        payload = {
            "scale": SCALE,
            "degradation": self.degradation,
            "seed": self.seed,
            "intensity": self.intensity,
            "methods": list(self.methods),
            "images": list(self.images),
            "models": self.models,
            "lr_consistency_degradation": self.consistency,
            "gain_vs_pretrained_against": self.pretrained_references,
            "rows": [{key: _json_number(value) for key, value in row.items()} for row in self.rows],
        }
        return io.write_json(path, payload)

    def table(self) -> str:
        """The rows as an aligned text table (PSNR and gains to 2 decimals, SSIM to 4)."""
        header = (
            "image",
            "method",
            "PSNR dB",
            "SSIM",
            "dB vs bicubic",
            "% vs bicubic",
            "dB vs pretrained",
            "% vs pretrained",
            "LR consistency dB",
        )
        body = [
            (
                str(row["image"]),
                str(row["method"]),
                _fmt(row["psnr"], 2),
                _fmt(row["ssim"], 4),
                _fmt(row["gain_vs_bicubic_db"], 2, sign=True),
                _fmt(row["gain_vs_bicubic_pct"], 1, sign=True),
                _fmt(row["gain_vs_pretrained_db"], 2, sign=True),
                _fmt(row["gain_vs_pretrained_pct"], 1, sign=True),
                _fmt(row["lr_consistency_psnr"], 2),
            )
            for row in self.rows
        ]
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
            for line in [header, *body]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(line.rstrip() for line in lines)


def _fmt(value: "float | None", digits: int, *, sign: bool = False) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def table_rows(
    scores: dict[tuple[str, str], tuple["float | None", ...]],
    names: Sequence[str],
    methods: Sequence[str],
    references: "dict[str, str | None]",
) -> list[dict[str, Any]]:
    """The rows of each image, then the mean rows (none for a single image: they would repeat its rows)."""
    scores = dict(scores)
    means = [MEAN] if len(names) > 1 else []
    for method in methods if means else ():
        columns = zip(*(scores[image, method] for image in names), strict=True)
        scores[MEAN, method] = tuple(None if None in column else float(np.mean(column)) for column in columns)
    return [
        _row(image, method, scores, references[method]) for image in [*names, *means] for method in methods
    ]


def _row(
    image: str,
    method: str,
    scores: dict[tuple[str, str], tuple["float | None", ...]],
    pretrained: "str | None",
) -> dict[str, Any]:
    """The row of ``(image, method)`` with its gains over bicubic and over ``pretrained`` (None: no gain)
    scored on the same image, and its LR consistency."""
    psnr_db, ssim_value, agrees = scores[image, method]
    row: dict[str, Any] = {"image": image, "method": method, "psnr": psnr_db, "ssim": ssim_value}
    for reference, column in ((BICUBIC, "gain_vs_bicubic"), (pretrained, "gain_vs_pretrained")):
        db = pct = None
        if reference is not None and psnr_db is not None and (image, reference) in scores:
            base = scores[image, reference][0]
            db = _defined(psnr_db - base)
            pct = _defined(100.0 * (psnr_db - base) / base) if db is not None and base != 0 else None
        row[f"{column}_db"], row[f"{column}_pct"] = db, pct
    return row | {"lr_consistency_psnr": agrees}


def _defined(value: float) -> "float | None":
    return None if math.isnan(value) else value
