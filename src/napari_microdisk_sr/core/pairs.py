"""High-resolution crops -> (LR, HR) training pairs: augmentation, seeded sampling, validation, splits.

Fine-tuning needs low-resolution inputs whose high-resolution truth is known. Two sources are supported:

- **synthetic** (the default): square HR patches are cut from the crops and a degradation
  (:func:`.degradation.degrade`) makes their LR counterparts: the study's bicubic down-sampling, a realistic
  microscope model with blur, camera-pixel integration and Poisson-Gaussian noise, or a calibrated profile;
- **paired**: registered LR and HR acquisitions of the same fields (a 4X and a 16X image, say) are given, and
  aligned patches are cut from both.

Every pair is a pure function of ``(seed, epoch, index)``: it has its own random stream, so an epoch gives
the same pairs in the same order whatever the batch size, and training resumes exactly from any batch.

Values are float32, mapped to ``[0, 1]`` as at inference (see :class:`.intensity.Intensity`; by default uint8
by its range, other dtypes by their 1st and 99.8th percentiles, values beyond them kept). Gray images are
replicated to three channels unless one channel is asked for; an alpha channel is dropped (it is never
learned). How the pairs are made is set by a :class:`~.pair_config.PairConfig`.
"""

import logging
import os
import queue
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from . import io
from .degradation import degrade_patches
from .device import resolve_device
from .errors import InputError, OutputError
from .images import check_finite, value_range
from .intensity import Intensity
from .pair_config import PairConfig, describe_small_crops, refuse_small_crops

log = logging.getLogger(__name__)

T = TypeVar("T")

# Domains of the per-pair random streams, so that training, validation and splits never share numbers.
_TRAIN, _VALIDATION, _SPLIT = 0, 1, 2


def _pair_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _dihedral(patch: np.ndarray, k: int) -> np.ndarray:
    """Symmetry ``k`` (0-7) of the square on a ``(c, h, w)`` patch: ``k % 4`` quarter turns, then a flip."""
    out = np.rot90(patch, k % 4, axes=(1, 2))
    return out[:, :, ::-1] if k >= 4 else out  # k >= 4: flipped left-right


class PairSampler:
    """Seeded (LR, HR) patch pairs drawn from high-resolution crops, epoch by epoch.

    Each pair picks a crop uniformly (every crop, one disk, weighs the same whatever its size), a patch
    position uniformly inside it, a symmetry of the square (when augmenting) and, in synthetic mode, a
    degradation. All of it comes from the pair's own random stream, seeded by ``(seed, epoch, index)``.

    Parameters
    ----------
    hr_images : sequence of (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) ndarray
        High-resolution crops of any integer or float dtype (see the module notes for value mapping).
    config : PairConfig, optional
        Patch size, scale, degradation, ... (the defaults of :class:`PairConfig` when not given).
    lr_images : sequence of ndarray, optional
        Paired mode: the registered low-resolution acquisition of each crop, exactly ``1 / scale`` of its
        height and width. Patches are then cut from both at the same place and ``config.degradation`` is
        unused.

    Raises
    ------
    InputError
        For no images, unsupported shapes or dtypes, non-finite values, LR/HR sizes that do not match, RGB
        images with ``channels=1``, or (with ``small_crops="refuse"``) crops smaller than the patch.

    Notes
    -----
    Crops smaller than the patch are mirror-padded with the edge pixel repeated (numpy's ``"symmetric"``):
    that padding commutes with area down-sampling on the LR pixel grid, so padded paired crops stay aligned.
    """

    def __init__(
        self,
        hr_images: Sequence[np.ndarray],
        config: "PairConfig | None" = None,
        *,
        lr_images: "Sequence[np.ndarray] | None" = None,
    ) -> None:
        self.config = PairConfig() if config is None else config
        if isinstance(hr_images, np.ndarray) or len(hr_images) == 0:
            raise InputError("give a list of one or more HR crops")
        if lr_images is not None and (isinstance(lr_images, np.ndarray) or len(lr_images) != len(hr_images)):
            count = 1 if isinstance(lr_images, np.ndarray) else len(lr_images)
            raise InputError(
                f"{len(hr_images)} HR image(s) but {count} LR image(s): give one LR image per HR image"
            )
        channels, mapping = self.config.channels, self.config.intensity
        hr = [_as_unit_chw(image, f"HR image {i}", channels, mapping) for i, image in enumerate(hr_images)]
        lr = None
        if lr_images is not None:
            lr = [
                _as_unit_chw(image, f"LR image {i}", channels, mapping) for i, image in enumerate(lr_images)
            ]
            _check_paired(hr, lr, self.config.scale)
        self._hr, self._lr = self._fit_to_patch(hr, lr)

    @property
    def paired(self) -> bool:
        """Whether the pairs are cut from given LR/HR images (rather than synthesised)."""
        return self._lr is not None

    def __len__(self) -> int:
        return self.config.pairs_per_epoch

    def _fit_to_patch(
        self, hr: list[np.ndarray], lr: "list[np.ndarray] | None"
    ) -> tuple[list[np.ndarray], "list[np.ndarray] | None"]:
        scale, patch = self.config.scale, self.config.patch
        small = [i for i, image in enumerate(hr) if min(image.shape[1:]) < patch]
        if not small:
            return hr, lr
        if self.config.small_crops == "refuse":
            refuse_small_crops([image.shape[1:] for image in hr], patch)
        log.info("mirror-padding %s", describe_small_crops([image.shape[1:] for image in hr], patch))
        # Pad on the LR grid (patch // scale), so that padded paired crops stay aligned.
        for i in small:
            _, h, w = hr[i].shape
            need_y, need_x = (-(-max(0, patch - size) // scale) for size in (h, w))
            pads = ((need_y // 2, need_y - need_y // 2), (need_x // 2, need_x - need_x // 2))
            hr[i] = _pad(hr[i], [(a * scale, b * scale) for a, b in pads])
            if lr is not None:
                lr[i] = _pad(lr[i], pads)
        return hr, lr

    def pairs(self, epoch: int, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The pairs ``indices`` of ``epoch``, as arrays.

        Parameters
        ----------
        epoch : int
            Epoch number, from 0.
        indices : sequence of int
            Pair numbers within the epoch (any non-negative integers; ``range(len(self))`` is one epoch).

        Returns
        -------
        lr : (N, C, patch // scale, patch // scale) float32 ndarray
        hr : (N, C, patch, patch) float32 ndarray
            Mapped to ``[0, 1]`` by ``config.intensity``; ``C`` is ``config.channels``.
        """
        epoch = _non_negative_int(epoch, "epoch")
        indices = [_non_negative_int(i, "pair index") for i in indices]
        if not indices:
            raise InputError("no pair indices given")
        seed = self.config.seed
        rngs = [_pair_rng(seed, _TRAIN, epoch, i) for i in indices]
        images = [int(rng.integers(len(self._hr))) for rng in rngs]
        return self._make(rngs, images, augment=self.config.augment)

    def batches(
        self,
        epoch: int,
        batch_size: int,
        *,
        device: "str | torch.device" = "cpu",
        first_batch: int = 0,
        prefetch: int = 0,
        part: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate over one epoch in batches.

        Parameters
        ----------
        epoch : int
            Epoch number, from 0; the same epoch always gives the same batches.
        batch_size : int
            Pairs per batch; the last batch holds the remainder.
        device : str or torch.device
            Where the tensors go (``"auto"`` as in :func:`~.device.resolve_device`).
        first_batch : int
            Skip the batches before this one without computing them (to resume an epoch).
        prefetch : int
            Batches made ahead by a background thread while the caller trains on the current one (0: made
            when asked for). For a GPU, which the host would otherwise leave idle while it makes the next
            batch; the batches are the same either way. On CUDA they travel from pinned memory,
            asynchronously.
        part : (int, int)
            ``(k, n)``: only the ``k``-th of ``n`` contiguous parts of every batch, the parts as even as can
            be (they differ in size by one pair at most; a part may be empty), for process ``k`` of ``n``
            training together on the batches of one process.

        Returns
        -------
        Iterator of (lr, hr)
            ``lr`` is a ``(B, C, patch // scale, patch // scale)`` and ``hr`` a ``(B, C, patch, patch)``
            float32 Tensor, mapped by ``config.intensity``, on ``device``. The arguments are checked when
            ``batches`` is called; each batch is made when it is asked for.
        """
        epoch = _non_negative_int(epoch, "epoch")
        batch_size = _non_negative_int(batch_size, "batch_size")
        if batch_size == 0:
            raise InputError("batch_size must be at least 1")
        n_batches = -(-len(self) // batch_size)
        first_batch = _non_negative_int(first_batch, "first_batch")
        if first_batch > n_batches:
            raise InputError(f"first_batch {first_batch} is past the epoch's {n_batches} batches")
        prefetch = _non_negative_int(prefetch, "prefetch")
        k, n = (_non_negative_int(value, "part") for value in part)
        if k >= n:
            raise InputError(f"part {k} of {n} does not exist; parts count from 0")
        target = resolve_device(device)
        pinned = target.type == "cuda"

        def make(start: int) -> tuple[torch.Tensor, torch.Tensor]:
            count = min(batch_size, len(self) - start)
            indices = range(start + k * count // n, start + (k + 1) * count // n)
            lr, hr = self.pairs(epoch, indices) if indices else self._no_pairs()
            tensors = torch.from_numpy(lr), torch.from_numpy(hr)
            return (tensors[0].pin_memory(), tensors[1].pin_memory()) if pinned else tensors

        def generate() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            made = map(make, range(first_batch * batch_size, len(self), batch_size))
            source = _made_ahead(made, prefetch) if prefetch else made
            try:
                for lr, hr in source:
                    yield lr.to(target, non_blocking=pinned), hr.to(target, non_blocking=pinned)
            finally:
                if prefetch:
                    source.close()  # stops the thread when the caller stops early

        return generate()

    def _no_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """An empty batch: no LR and no HR patches, of the pairs' shapes."""
        channels, patch = self.config.channels, self.config.patch
        small = patch // self.config.scale
        lr, hr = (np.empty((0, channels, side, side), np.float32) for side in (small, patch))
        return lr, hr

    def _make(
        self, rngs: Sequence[np.random.Generator], images: Sequence[int], *, augment: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cut, augment and (in synthetic mode) degrade one pair per ``(rng, image index)``."""
        scale, patch = self.config.scale, self.config.patch
        small = patch // scale
        hr_patches, lr_patches = [], []
        for rng, index in zip(rngs, images, strict=True):
            hr_image = self._hr[index]
            if self._lr is None:
                y = int(rng.integers(hr_image.shape[1] - patch + 1))
                x = int(rng.integers(hr_image.shape[2] - patch + 1))
                hr, lr = hr_image[:, y : y + patch, x : x + patch], None
            else:
                lr_image = self._lr[index]
                y = int(rng.integers(lr_image.shape[1] - small + 1))
                x = int(rng.integers(lr_image.shape[2] - small + 1))
                hr = hr_image[:, y * scale : (y + small) * scale, x * scale : (x + small) * scale]
                lr = lr_image[:, y : y + small, x : x + small]
            if augment:
                k = int(rng.integers(8))
                hr = _dihedral(hr, k)
                lr = None if lr is None else _dihedral(lr, k)
            hr_patches.append(np.ascontiguousarray(hr))
            lr_patches.append(lr)
        if self._lr is None:
            lr_patches = degrade_patches(
                hr_patches, kind=self.config.degradation, scale=scale, rngs=rngs, profile=self.config.profile
            )
        channels = self.config.channels
        return _stack(lr_patches, channels), _stack(hr_patches, channels)


def _made_ahead(items: Iterator[T], ahead: int) -> Generator[T, None, None]:
    """Iterate over ``items`` while a background thread computes up to ``ahead`` of them in advance.

    An exception in the thread is raised here, in order; closing the iterator stops the thread.
    """
    slots: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((end, None))
        except Exception as exc:  # re-raised in the consumer
            slots.put((end, exc))

    def consume() -> Generator[T, None, None]:
        worker = threading.Thread(target=produce, name="microdisk-sr-pairs", daemon=True)
        worker.start()
        try:
            while True:
                item, error = slots.get()
                if item is end:
                    if error is not None:
                        raise error
                    return
                yield item
        finally:
            stop.set()
            while worker.is_alive():
                try:
                    slots.get(timeout=0.1)
                except queue.Empty:
                    continue
            worker.join()

    return consume()


def _stack(patches: Sequence[np.ndarray], channels: int) -> np.ndarray:
    """Stack ``(1 or 3, h, w)`` patches into ``(N, channels, h, w)``, replicating gray ones."""
    out = np.empty((len(patches), channels, *patches[0].shape[1:]), dtype=np.float32)
    for slot, patch in zip(out, patches, strict=True):
        slot[...] = patch
    return out


def _non_negative_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _as_unit_chw(image: np.ndarray, what: str, channels: int, intensity: Intensity) -> np.ndarray:
    """A crop as float32 ``(1 or 3, H, W)``, mapped by ``intensity`` (alpha dropped), validated."""
    image = np.asarray(image)
    if image.dtype.kind not in "uif":
        raise InputError(f"{what} has dtype {image.dtype}; give an integer or float intensity image")
    if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
        image = image[..., 0] if image.shape[-1] == 1 else image[..., :3]
    elif image.ndim != 2:
        raise InputError(f"{what} has shape {image.shape}; expected (H, W), (H, W, 1|3|4)")
    if image.size == 0:
        raise InputError(f"{what} is empty (shape {image.shape})")
    if channels == 1 and image.ndim == 3:
        raise InputError(
            f"{what} is RGB but one-channel pairs were asked for; make it gray or use channels=3"
        )
    check_finite(image, what)
    try:
        low, high = value_range(image, intensity=intensity)
    except InputError as exc:
        raise InputError(f"{what}: {exc}") from exc
    unit = (image.astype(np.float64) - low) / (high - low if high > low else 1.0)
    chw = unit[None] if unit.ndim == 2 else np.moveaxis(unit, -1, 0)
    return np.ascontiguousarray(chw, dtype=np.float32)


def _check_paired(hr: Sequence[np.ndarray], lr: Sequence[np.ndarray], scale: int) -> None:
    for i, (hr_image, lr_image) in enumerate(zip(hr, lr, strict=True)):
        expected = (lr_image.shape[1] * scale, lr_image.shape[2] * scale)
        if hr_image.shape[1:] != expected:
            raise InputError(
                f"pair {i}: HR is {hr_image.shape[1]}x{hr_image.shape[2]} but LR is "
                f"{lr_image.shape[1]}x{lr_image.shape[2]}; HR must be exactly {scale}x the LR size "
                f"({expected[0]}x{expected[1]}): crop both to the same registered field"
            )
        if hr_image.shape[0] != lr_image.shape[0]:
            raise InputError(f"pair {i}: HR and LR must both be gray or both RGB")


def _pad(image: np.ndarray, pads: Sequence[tuple[int, int]]) -> np.ndarray:
    return np.pad(image, [(0, 0), *pads], mode="symmetric")


def validation_pairs(
    hr_images: Sequence[np.ndarray],
    config: PairConfig,
    *,
    n_per_image: int = 2,
    lr_images: "Sequence[np.ndarray] | None" = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed validation set: ``n_per_image`` pairs from each image, without augmentation.

    The set depends only on the images and ``config`` (its seed, patch, scale, degradation), never on an
    epoch, so every validation pass of a training run, and a resumed run, scores the same pairs.

    Parameters
    ----------
    hr_images, lr_images
        As for :class:`PairSampler` (the validation crops, kept apart from the training crops with
        :func:`split_by_disk`).
    config : PairConfig
        The training run's pair configuration.
    n_per_image : int
        Patches per image, at least 1.

    Returns
    -------
    lr : (N, C, patch // scale, patch // scale) float32 Tensor
    hr : (N, C, patch, patch) float32 Tensor
        On the CPU, ``N = len(hr_images) * n_per_image``, image by image.
    """
    if _non_negative_int(n_per_image, "n_per_image") == 0:
        raise InputError("n_per_image must be at least 1")
    sampler = PairSampler(hr_images, config, lr_images=lr_images)
    keys = [(image, k) for image in range(len(hr_images)) for k in range(n_per_image)]
    rngs = [_pair_rng(config.seed, _VALIDATION, image, k) for image, k in keys]
    lr, hr = sampler._make(rngs, [image for image, _ in keys], augment=False)
    return torch.from_numpy(lr), torch.from_numpy(hr)


def split_by_disk(n_items: int, val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split crops (one disk each) into training and validation sets.

    Splitting by disk, not by patch, keeps every validation patch from disks the model never trained on.

    Parameters
    ----------
    n_items : int
        Number of crops, at least 1.
    val_fraction : float
        Share of crops for validation, in ``[0, 1)``. Rounded to the nearest count, but at least one crop
        when positive, and never all of them: at least one crop always stays for training (so a single
        crop gives no validation set).
    seed : int
        Seed of the random assignment.

    Returns
    -------
    train_idx, val_idx : list of int
        Sorted crop indices; together they are ``range(n_items)``.
    """
    n_items = _non_negative_int(n_items, "n_items")
    if n_items == 0:
        raise InputError("no crops to split; select at least one disk")
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = 0 if val_fraction == 0 else min(max(1, round(n_items * val_fraction)), n_items - 1)
    if val_fraction > 0 and n_val == 0:
        log.warning("a single crop cannot be split: training on it with no validation set")
    order = _pair_rng(_non_negative_int(seed, "seed"), _SPLIT).permutation(n_items)
    return sorted(int(i) for i in order[n_val:]), sorted(int(i) for i in order[:n_val])


def export_pairs(
    sampler: PairSampler, folder: "str | os.PathLike[str]", *, n: int = 16, epoch: int = 0, fmt: str = "png"
) -> list[tuple[Path, Path]]:
    """Write the first ``n`` pairs of an epoch as image files, to look at what the model will learn from.

    Files are ``pair000_lr.<fmt>``, ``pair000_hr.<fmt>``, ... and ``pairs.json`` (the configuration), written
    atomically; existing files are never replaced.

    Parameters
    ----------
    sampler : PairSampler
        The pairs' source.
    folder : path
        Destination folder, created if needed.
    n : int
        Number of pairs, at least 1.
    epoch : int
        The epoch whose first pairs are written.
    fmt : {"png", "tif"}
        ``"png"``: 8-bit images to view; ``"tif"``: float32 TIFFs holding the exact values.

    Returns
    -------
    list of (Path, Path)
        The ``(lr, hr)`` files, pair by pair.

    Raises
    ------
    OutputError
        If the folder is not writable or already holds files of these names.
    """
    if fmt not in ("png", "tif"):
        raise InputError(f"fmt must be 'png' or 'tif', got {fmt!r}")
    if _non_negative_int(n, "n") == 0:
        raise InputError("n must be at least 1")
    folder = io.ensure_writable_dir(folder)
    paths = [(folder / f"pair{i:03d}_lr.{fmt}", folder / f"pair{i:03d}_hr.{fmt}") for i in range(n)]
    taken = [path for path in [*(p for pair in paths for p in pair), folder / "pairs.json"] if path.exists()]
    if taken:
        raise OutputError(f"{taken[0]} exists; export pairs into an empty folder")
    lr, hr = sampler.pairs(epoch, range(n))
    for (lr_path, hr_path), lr_patch, hr_patch in zip(paths, lr, hr, strict=True):
        _write_patch(lr_path, lr_patch, fmt)
        _write_patch(hr_path, hr_patch, fmt)
    config = asdict(sampler.config) | {"intensity": str(sampler.config.intensity)}
    info = {"config": config, "paired": sampler.paired, "epoch": epoch, "n": n}
    io.write_json(folder / "pairs.json", info)
    return paths


def _write_patch(path: Path, patch: np.ndarray, fmt: str) -> None:
    image = patch[0] if patch.shape[0] == 1 else np.moveaxis(patch, 0, -1)
    if fmt == "tif":
        io.write_tiff(path, np.ascontiguousarray(image, dtype=np.float32))
        return
    import imageio.v3 as iio

    pixels = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    io.atomic_write(path, lambda tmp: iio.imwrite(tmp, pixels, extension=".png"))
