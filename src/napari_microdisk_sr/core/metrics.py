"""The evaluation of upscaling methods: a job that scores each method's x4 output against HR references
(or its LR alone) into a :class:`.comparison_table.EvalResult`; the parents that fine-tuned models are
compared with.

Conventions (the measures themselves are in :mod:`.quality`):

- In :func:`evaluate`, an HR image that maps by its own range (floats, signed and 32/64-bit integers) and
  its given LR image share one range, from the smaller minimum to the larger maximum of the two; an HR/LR
  pair of different dtypes is refused.
- The table of scores, its gains and its files (``inf`` in them): :mod:`.comparison_table`.
- ``lr_consistency_psnr`` needs no HR: each output degraded back to the LR grid (area averaging, or a
  calibrated profile) against the LR image (see :mod:`.consistency`). Given LR images alone, an evaluation
  leaves PSNR, SSIM and the gains empty (None) and measures the consistency (and the disks) only.
"""

import json
import logging
import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from . import infer, models
from .comparison_table import BICUBIC, MEAN, SCALE, EvalResult, table_rows
from .consistency import AREA, BackDegradation, consistency_of
from .degradation import check_degradation, degrade
from .device import resolve_device
from .disk_measures import ReferenceDisks
from .errors import InputError
from .images import Normalization, image_layout, maps_by_own_range, normalizations_for, validate_image
from .intensity import AUTO, Intensity
from .progress import StopFlag, drive
from .quality import SSIM_WINDOW, abs_error, psnr, ssim

log = logging.getLogger(__name__)

PRETRAINED = models.DEFAULT_MODEL
"""The pretrained model that the second gain column compares with, except for a fine-tuned model, which is
compared with its own parent (see :func:`model_parent`)."""


@dataclass(frozen=True)
class EvalEvent:
    """Progress of an evaluation, yielded after each tile of a model and after each (image, method).

    Attributes
    ----------
    done, total : int
        (image, method) results finished, and their number.
    image, method : str
        The image and method being (or just) computed.
    tiles_done, tiles_total : int
        Tiles finished of the current model run (0 and 0 for bicubic and for "result finished" events).
    """

    done: int
    total: int
    image: str
    method: str
    tiles_done: int = 0
    tiles_total: int = 0


@dataclass(frozen=True)
class _Case:
    """One image to score: its name, the HR reference, the LR input if given, and their value mappings."""

    index: int
    name: str
    hr: "np.ndarray | None"  # None: LR only
    hr_norm: Normalization
    lr: "np.ndarray | None"
    lr_norm: Normalization


def evaluate(
    hr_images: "Sequence[np.ndarray] | None",
    methods: Sequence[str],
    *,
    lr_images: "Sequence[np.ndarray] | None" = None,
    degradation: str = "bicubic",
    names: "Sequence[str] | None" = None,
    device: "str | torch.device" = "auto",
    tile: int = infer.DEFAULT_TILE,
    error_maps: bool = False,
    keep_outputs: bool = False,
    stop: "StopFlag | None" = None,
    seed: int = 0,
    intensity: "Intensity | str | None" = None,
    consistency: BackDegradation = AREA,
    per_disk: bool = False,
) -> Generator[EvalEvent, None, "EvalResult | None"]:
    """Score x4 upscaling methods against high-resolution references, as a job generator.

    Each LR image is made from its HR image by :func:`~.degradation.degrade` (HR first cropped at the bottom
    and right to a multiple of 4; the LR rounded to the HR's dtype, as a camera would store it), unless
    ``lr_images`` are given. Every method upscales the LR image and its output is compared with the HR
    image, both mapped by one affine map computed from the HR (see ``intensity``), with data range 1
    (:func:`psnr`, :func:`ssim`). Arguments are checked when ``evaluate`` is called; the generator does the
    work (loading the models first), yields :class:`EvalEvent` and returns the :class:`EvalResult`.

    Parameters
    ----------
    hr_images : sequence of (H, W), (H, W, 3) or (H, W, 4) ndarray, or None
        References, integer or float; alpha is ignored. None: ``lr_images`` alone, of at least 3x3 pixels
        (PSNR, SSIM and gains are then None; with ``per_disk``, the disks are found and measured on each LR
        image, rows of method :data:`.disk_measures.LR_METHOD`, and on every output).
    methods : sequence of str
        ``"bicubic"``, model registry names (``models.REGISTRY``) or paths of model files, each once.
    lr_images : sequence of ndarray, optional
        Registered LR acquisitions, one per HR image, exactly 1/4 of its height and width, with the same
        channels.
    degradation : {"bicubic", "realistic"}
        How LR images are made from HR ones when not given.
    names : sequence of str, optional
        Image names for the rows (default ``image1``, ``image2``, ...); unique, and not ``"mean"``.
    device : str or torch.device
        Where the models run (``"auto"``: CUDA, then MPS, then CPU).
    tile : int
        Tile side in LR pixels for the models (0: whole images).
    error_maps : bool
        Keep per-image absolute-error maps in the result.
    keep_outputs : bool
        Keep the upscaled images in the result (to save them without upscaling again).
    stop : StopFlag, optional
        Checked between steps and tiles; once set, the job returns None.
    seed : int
        Seed of the realistic degradation (image ``i`` uses the stream ``(seed, i)``).
    intensity : Intensity or str, optional
        The value mapping (see :class:`Intensity`). The models upscale by it (None: each model by its
        own, as :func:`.infer.upscale`). The scores compare intensities in one mapping for the HR, its LR and
        every output, computed from the HR (by ``auto`` when None): its dtype's range, ``[0, 2**N - 1]`` or
        its percentiles, so PSNR and SSIM are relative to that span, and a method that shifts or scales the
        intensities is scored down for it; by the min-max of HR and LR together for floats in ``range``
        mode. Without HR images, by the LR's own mapping.
    consistency : BackDegradation
        How outputs are degraded back to score ``lr_consistency_psnr`` (area averaging by default, or a
        profile's: :func:`.consistency.read_profile`).
    per_disk : bool
        Detect the disks of each HR image and measure them on it and on every output
        (:class:`.disk_measures.ReferenceDisks`) into ``EvalResult.disk_rows``.

    Returns
    -------
    Generator[EvalEvent, None, EvalResult or None]
    """
    methods = _check_methods(methods)
    if hr_images is None and lr_images is None:
        raise InputError("give HR images, LR images, or both to evaluate")
    names = _check_names(names, len(hr_images if hr_images is not None else lr_images))
    check_degradation(degradation)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    infer.UpscaleConfig(tile=tile, device=str(device))  # validates tile and device
    target = resolve_device(device)
    mapping = AUTO if intensity is None else Intensity.parse(intensity)
    cases = _cases(hr_images, lr_images, names, mapping)
    return _evaluate_job(
        cases,
        methods,
        device=target,
        tile=tile,
        error_maps=error_maps,
        keep_outputs=keep_outputs,
        stop=stop,
        degradation=None if lr_images is not None else degradation,
        seed=int(seed),
        intensity=None if intensity is None else mapping,
        scored_by=mapping,
        consistency=consistency,
        per_disk=per_disk,
    )


def evaluate_all(
    hr_images: "Sequence[np.ndarray] | None",
    methods: Sequence[str],
    *,
    on_event: "Callable[[EvalEvent], None] | None" = None,
    **options: Any,
) -> "EvalResult | None":
    """Run :func:`evaluate` to its end and return its result (None if ``options["stop"]`` was set).

    ``on_event`` is called with each :class:`EvalEvent`; ``options`` are :func:`evaluate`'s keywords.
    """
    return drive(evaluate(hr_images, methods, **options), on_event)


def _check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    if isinstance(methods, str) or not methods:
        raise InputError("give a list of one or more methods, e.g. ['bicubic', 'realesrgan-x4plus']")
    methods = tuple(methods)
    for method in methods:
        if not isinstance(method, str) or not method:
            raise InputError(f"a method must be a non-empty string, got {method!r}")
        if method == BICUBIC or method in models.REGISTRY or Path(method).is_file():
            continue
        if Path(method).suffix or os.sep in method or "/" in method:
            raise InputError(f"model file {method} does not exist; check the path")
        raise InputError(
            f"unknown method {method!r}: use 'bicubic', a model name ({', '.join(models.REGISTRY)}) "
            "or the path of a model file"
        )
    duplicated = sorted({m for m in methods if methods.count(m) > 1})
    if duplicated:
        raise InputError(f"method(s) given more than once: {', '.join(duplicated)}")
    return methods


def _check_names(names: "Sequence[str] | None", count: int) -> tuple[str, ...]:
    if count == 0:
        raise InputError("give at least one HR image to evaluate")
    if names is None:
        return tuple(f"image{i + 1}" for i in range(count))
    names = tuple(str(name) for name in names)
    if len(names) != count:
        raise InputError(f"{len(names)} name(s) for {count} image(s)")
    if len(set(names)) != count or MEAN in names:
        raise InputError(f"image names must be unique and not {MEAN!r}: {', '.join(names)}")
    return names


def _color(image: np.ndarray, what: str) -> np.ndarray:
    """The gray or RGB values of a 2D image (alpha dropped), validated."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    try:
        validate_image(image)
    except InputError as exc:
        raise InputError(f"{what}: {exc}") from exc
    layout = image_layout(image.shape)
    if layout.leading:
        raise InputError(
            f"{what} has shape {image.shape}; evaluate 2D gray or RGB images (split stacks first)"
        )
    return image[..., :3] if layout.has_alpha else image


def _norm(image: np.ndarray, what: str, intensity: Intensity) -> Normalization:
    try:
        return normalizations_for(image, image_layout(image.shape), intensity=intensity)[0]
    except InputError as exc:
        raise InputError(f"{what}: {exc}") from exc


def _cases(
    hr_images: "Sequence[np.ndarray] | None",
    lr_images: "Sequence[np.ndarray] | None",
    names: Sequence[str],
    intensity: Intensity,
) -> list[_Case]:
    """Check the images and pair them; HR images without LR are cropped to a multiple of the scale."""
    if hr_images is None:
        return [_lr_only_case(i, name, lr_images[i], intensity) for i, name in enumerate(names)]
    if lr_images is not None and len(lr_images) != len(hr_images):
        raise InputError(f"{len(hr_images)} HR image(s) but {len(lr_images)} LR image(s): give one LR per HR")
    cases = []
    for i, name in enumerate(names):
        hr = _color(hr_images[i], f"HR image {name}")
        hr_norm = _norm(hr, f"HR image {name}", intensity)
        if lr_images is None:
            h, w = (hr.shape[0] // SCALE) * SCALE, (hr.shape[1] // SCALE) * SCALE
            if h < SCALE * 3 or w < SCALE * 3:
                raise InputError(f"HR image {name} ({hr.shape[0]}x{hr.shape[1]}) is too small to evaluate x4")
            hr, lr, lr_norm = hr[:h, :w], None, hr_norm
        else:
            lr = _color(lr_images[i], f"LR image {name}")
            if hr.shape[:2] != (lr.shape[0] * SCALE, lr.shape[1] * SCALE) or hr.ndim != lr.ndim:
                raise InputError(
                    f"image {name}: HR {hr.shape} must be exactly {SCALE}x the LR {lr.shape} in height and "
                    "width, with the same channels"
                )
            if lr.dtype != hr.dtype:
                raise InputError(
                    f"image {name}: HR is {hr.dtype} but LR is {lr.dtype}; give both in one dtype, so that "
                    "their values mean the same brightness"
                )
            if maps_by_own_range(hr.dtype) and intensity.for_dtype(hr.dtype).mode == "range":
                # one range for both: each its own would shift and stretch one
                hr_norm = lr_norm = Normalization(
                    hr.dtype, min(float(hr.min()), float(lr.min())), max(float(hr.max()), float(lr.max()))
                )
            else:
                _norm(lr, f"LR image {name}", intensity)  # its values fit the bit depth too
                lr_norm = hr_norm  # the HR's percentiles too: one map, so intensities stay comparable
        if min(hr.shape[:2]) < SSIM_WINDOW:
            raise InputError(f"HR image {name} ({hr.shape[0]}x{hr.shape[1]}) is smaller than the SSIM window")
        cases.append(_Case(i, name, hr, hr_norm, lr, lr_norm))
    return cases


def _lr_only_case(index: int, name: str, image: np.ndarray, intensity: Intensity) -> _Case:
    lr = _color(image, f"LR image {name}")
    if min(lr.shape[:2]) < 3:
        raise InputError(f"LR image {name} ({lr.shape[0]}x{lr.shape[1]}) is too small to evaluate x4")
    norm = _norm(lr, f"LR image {name}", intensity)
    return _Case(index, name, None, norm, lr, norm)


def _evaluate_job(
    cases: Sequence[_Case],
    methods: Sequence[str],
    *,
    device: torch.device,
    tile: int,
    error_maps: bool,
    keep_outputs: bool,
    stop: "StopFlag | None",
    degradation: "str | None",
    seed: int,
    intensity: "Intensity | None",
    scored_by: Intensity,
    consistency: BackDegradation,
    per_disk: bool,
) -> Generator[EvalEvent, None, "EvalResult | None"]:
    # Held on the CPU: each upscaling job runs on its own copy on ``device``.
    loaded = {method: models.load_model(method, device="cpu") for method in methods if method != BICUBIC}
    for method, model in loaded.items():
        if model.spec.scale != SCALE:
            raise InputError(f"model {method} upscales x{model.spec.scale}; evaluation is x{SCALE}")
    total = len(cases) * len(methods)
    scores: dict[tuple[str, str], tuple[float | None, ...]] = {}
    disk_rows: list[dict[str, Any]] = []
    maps: dict[tuple[str, str], np.ndarray] = {}
    kept: dict[tuple[str, str], np.ndarray] = {}
    done = 0
    for case in cases:
        lr = case.lr if degradation is None else _synthetic_lr(case, degradation, seed)
        ref = None if case.hr is None else case.hr_norm.to_unit(case.hr)
        lr_unit = case.lr_norm.to_unit(lr)
        disks = None
        if per_disk:
            disks = ReferenceDisks(lr_unit, scale=SCALE) if ref is None else ReferenceDisks(ref)
            disk_rows += disks.reference_rows(case.name)
        for method in methods:
            if stop is not None and stop.is_set():
                return None
            if method == BICUBIC:
                output = _bicubic(lr, case.lr_norm)
            else:
                job = infer.upscale(
                    lr, loaded[method], tile=tile, device=device, stop=stop, intensity=intensity
                )
                result = yield from _relay(job, done, total, case.name, method)
                if result is None:
                    return None
                output = result.image
            out = case.lr_norm.to_unit(output)
            truth = (
                (None, None)
                if ref is None
                else (psnr(ref, out, data_range=1.0), ssim(ref, out, data_range=1.0))
            )
            scores[case.name, method] = (*truth, consistency_of(out, lr_unit, consistency).psnr)
            if disks is not None:
                disk_rows += disks.rows(case.name, method, out)
            if error_maps and ref is not None:
                maps[case.name, method] = abs_error(ref, out, data_range=1.0)
            if keep_outputs:
                kept[case.name, method] = output
            done += 1
            log.info("%s, %s: PSNR, SSIM, LR consistency: %s", case.name, method, scores[case.name, method])
            yield EvalEvent(done, total, case.name, method)
    names = [case.name for case in cases]
    references = _pretrained_references(methods, loaded)
    return EvalResult(
        rows=table_rows(scores, names, methods, references),
        methods=tuple(methods),
        images=tuple(names),
        degradation=degradation,
        seed=seed,
        intensity=str(scored_by),
        models={m: {"name": lm.name, "source": lm.source, "sha256": lm.sha256} for m, lm in loaded.items()},
        pretrained_references=references,
        error_maps=maps,
        outputs=kept,
        disk_rows=disk_rows,
        consistency=consistency.describe(),
    )


def _relay(
    job: Generator[infer.TileEvent, None, "np.ndarray | None"], done: int, total: int, image: str, method: str
) -> Generator[EvalEvent, None, "np.ndarray | None"]:
    """Run an upscaling job, turning its tile events into evaluation events; return its result."""
    while True:
        try:
            tile_event = next(job)
        except StopIteration as finished:
            return finished.value
        yield EvalEvent(done, total, image, method, tile_event.done, tile_event.total)


def _synthetic_lr(case: _Case, degradation: str, seed: int) -> np.ndarray:
    """The LR image made from ``case.hr``, rounded to its dtype (as a camera would store it)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(case.index,)))
    unit = degrade(case.hr_norm.to_unit(case.hr), kind=degradation, scale=SCALE, rng=rng)
    return case.hr_norm.from_unit(unit)


def _bicubic(lr: np.ndarray, norm: Normalization) -> np.ndarray:
    """Bicubic x4 interpolation (OpenCV ``INTER_CUBIC``), in the LR's dtype and range."""
    h, w = lr.shape[:2]
    up = cv2.resize(norm.to_unit(lr), (w * SCALE, h * SCALE), interpolation=cv2.INTER_CUBIC)
    return norm.from_unit(up)


def model_parent(method: str) -> "dict[str, str] | None":
    """The parent ``{"name", "source", "sha256"}`` that a fine-tuned model file's sidecar records
    (``info.provenance.parent``); None for bicubic, a registry model, or a file without that record."""
    if method == BICUBIC or method in models.REGISTRY:
        return None
    try:
        parent = json.loads(models.sidecar_path(method).read_text())["info"]["provenance"]["parent"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return parent if isinstance(parent, dict) and isinstance(parent.get("sha256"), str) else None


def with_parents(methods: Sequence[str]) -> tuple[str, ...]:
    """``methods``, then the parents of their fine-tuned models that are not among them (a registry name, or
    the parent's weights file where it still is), so that each run is measured against its own parent."""
    chosen = list(methods)
    for method in methods:
        parent = model_parent(method)
        if parent is None:
            continue
        name, source = str(parent.get("name", "")), str(parent.get("source", ""))
        found = name if name in models.REGISTRY else source if source and Path(source).is_file() else None
        if found is not None and not any(Path(found).resolve() == Path(m).resolve() for m in chosen):
            chosen.append(found)
    return tuple(chosen)


def _pretrained_references(
    methods: Sequence[str], loaded: "dict[str, models.LoadedModel]"
) -> "dict[str, str | None]":
    """The method each method's gain over "pretrained" compares with: a fine-tuned model's own parent, found
    among the methods by its weights' SHA-256 (None if it was not evaluated), else :data:`PRETRAINED`."""
    by_sha256 = {model.sha256: method for method, model in loaded.items()}
    references: dict[str, str | None] = {}
    for method in methods:
        parent = model_parent(method)
        references[method] = PRETRAINED if parent is None else by_sha256.get(parent["sha256"])
    return references
