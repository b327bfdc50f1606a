"""Models: what a network is (:class:`ModelSpec`), the named models, and loading and saving weights.

A model is named either by a registry name (:data:`REGISTRY`, default :data:`DEFAULT_MODEL`) or by the path
of a weights file. Saved models follow Real-ESRGAN's checkpoint convention, ``{"params_ema": state_dict}``
with basicsr key names, so Real-ESRGAN's scripts load them unchanged, plus a sidecar JSON file
(``model.pth`` -> ``model.json``) holding the :class:`ModelSpec` and free-form provenance. Model packages
are read by :mod:`.package_weights`; :mod:`.model_cache` keeps the last model loaded for reuse.
"""

import inspect
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .archs import Architecture, architecture, detect_architecture
from .device import resolve_device
from .errors import InputError, MicrodiskSRError, OutputError, WeightsError, short_list
from .intensity import Intensity, recorded_intensity
from .io import atomic_write, write_json
from .package_weights import is_package, read_package_weights
from .weights import (
    EMBEDDED,
    EMBEDDED_PACKAGE,
    embedded_files,
    embedded_weights,
    file_sha256,
    read_state_dict,
    strip_wrapper_prefixes,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODEL",
    "REGISTRY",
    "SIDECAR_FORMAT",
    "LoadedModel",
    "ModelSpec",
    "RegistryEntry",
    "load_model",
    "recorded_intensity_of",
    "save_model",
    "sidecar_path",
    "spec_from_state_dict",
]

SIDECAR_FORMAT = "napari-microdisk-sr model 1"

ParamValue = int | str


@dataclass(frozen=True)
class ModelSpec:
    """A network architecture with all its hyper-parameters: enough to build it and to load weights into it.

    Parameters
    ----------
    arch : {"RRDBNet", "SRVGGNetCompact"}
        The network class (basicsr's name).
    params : mapping or tuple of (str, int or str) pairs
        Constructor arguments; omitted ones take the constructor's defaults. Stored normalised as a tuple
        of every argument in signature order, so equal networks have equal specs.

    Raises
    ------
    InputError
        For an unknown architecture, unknown or missing arguments, or values the network cannot use.

    Examples
    --------
    >>> spec = ModelSpec("SRVGGNetCompact", {"num_conv": 16, "upscale": 4})
    >>> spec.scale, spec.in_channels, spec.tile_pad
    (4, 3, 18)
    """

    arch: str
    params: "tuple[tuple[str, ParamValue], ...] | Mapping[str, ParamValue]" = field(default=())

    def __post_init__(self) -> None:
        cls = architecture(self.arch).network
        try:
            given = dict(self.params)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"model params must be a mapping or (name, value) pairs, got {self.params!r}"
            ) from exc
        signature = inspect.signature(cls.__init__)
        names = [name for name in signature.parameters if name != "self"]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise InputError(
                f"{self.arch} has no parameter {', '.join(unknown)}; its parameters: {', '.join(names)}"
            )
        missing = [
            n for n in names if n not in given and signature.parameters[n].default is inspect.Parameter.empty
        ]
        if missing:
            raise InputError(f"{self.arch} needs {', '.join(missing)}")
        full = {n: given.get(n, signature.parameters[n].default) for n in names}
        cls.validate(**full)
        object.__setattr__(self, "params", tuple(full.items()))

    @property
    def architecture(self) -> Architecture:
        """The network's adapter: what the package knows about it."""
        return architecture(self.arch)

    @property
    def kwargs(self) -> dict[str, ParamValue]:
        """The constructor arguments as a dict."""
        return dict(self.params)

    @property
    def scale(self) -> int:
        """Upscaling factor: output size / input size."""
        return self.architecture.scale(self.kwargs)

    @property
    def in_channels(self) -> int:
        """Channels of the input image."""
        return int(self.kwargs["num_in_ch"])

    @property
    def out_channels(self) -> int:
        """Channels of the output image."""
        return int(self.kwargs["num_out_ch"])

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (RRDBNet x2: 2, x1: 4, else 1)."""
        return self.architecture.size_multiple(self.kwargs)

    @property
    def receptive_radius(self) -> int:
        """Input pixels on each side that an output pixel can depend on (exact; the tests measure it)."""
        return self.architecture.receptive_radius(self.kwargs)

    @property
    def tile_pad(self) -> int:
        """Recommended context, in input pixels, around each tile of tiled inference.

        SRVGGNetCompact: the receptive radius (realesr-animevideov3: 18), so tiled output equals untiled
        output exactly. RRDBNet: 32 trunk pixels (x4plus: 32 input pixels; x2: 64; x1: 128), or its
        receptive radius if smaller; a multiple of :attr:`size_multiple`.
        """
        return self.architecture.tile_pad(self.kwargs)

    def build(self) -> nn.Module:
        """A new, randomly initialised network of this spec (float32, CPU, training mode)."""
        return self.architecture.build(self.kwargs)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: ``arch`` and ``params``, plus ``scale`` and channel counts for the reader."""
        return {
            "arch": self.arch,
            "params": self.kwargs,
            "scale": self.scale,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ModelSpec":
        """The spec written by :meth:`to_json`; ``scale`` and channel counts, if present, must agree."""
        if not isinstance(data, Mapping) or not isinstance(data.get("arch"), str):
            raise InputError("a model spec needs an 'arch' name and a 'params' object")
        params = data.get("params", {})
        if not isinstance(params, Mapping):
            raise InputError("the 'params' of a model spec must be an object")
        spec = cls(data["arch"], params)
        for key in ("scale", "in_channels", "out_channels"):
            if key in data and data[key] != getattr(spec, key):
                raise InputError(
                    f"model spec says {key}={data[key]!r} but its params give {getattr(spec, key)}"
                )
        return spec

    def __str__(self) -> str:
        return f"{self.arch}({', '.join(f'{k}={v!r}' for k, v in self.params)})"


@dataclass(frozen=True)
class RegistryEntry:
    """A named model: its network, what it is for, and where its weights come from."""

    spec: ModelSpec
    description: str
    source: str


def _embedded_entry(name: str, description: str) -> RegistryEntry:
    embedded = EMBEDDED[name]
    source = f"embedded in the {EMBEDDED_PACKAGE} package: models/{embedded.stem}.param/.bin (ncnn, fp16)"
    return RegistryEntry(ModelSpec(embedded.arch, embedded.kwargs), description, source)


REGISTRY: dict[str, RegistryEntry] = {
    "realesrgan-x4plus": _embedded_entry(
        "realesrgan-x4plus",
        "Real-ESRGAN x4plus, the general x4 model: best quality, slow on a CPU",
    ),
    "realesr-animevideov3": _embedded_entry(
        "realesr-animevideov3",
        "Real-ESRGAN animevideo v3, a compact x4 model: ~29x cheaper than x4plus, for quick previews",
    ),
}
"""The models available by name, offline."""

DEFAULT_MODEL = "realesrgan-x4plus"


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A network with its weights loaded, ready for inference or fine-tuning.

    Attributes
    ----------
    module : torch.nn.Module
        The network in eval mode, float32, on the requested device.
    spec : ModelSpec
    name : str
        The registry name, or the weights file's stem.
    source : str
        Where the weights came from, for provenance.
    sha256 : str
        SHA-256 of the weights file given, or, for a registry model, of the embedded ncnn ``.bin`` (the
        converted cache file is not byte-reproducible: ``torch.save`` stamps each file with a random id).
    intensity : Intensity or None
        The value mapping the model was fine-tuned with, from its sidecar (see
        :func:`.images.recorded_intensity`); None when none is recorded (registry models and bare files).
    """

    module: nn.Module
    spec: ModelSpec
    name: str
    source: str
    sha256: str
    intensity: "Intensity | None" = None


def sidecar_path(path: "str | os.PathLike[str]") -> Path:
    """The sidecar JSON of a weights file: ``model.pth`` -> ``model.json``."""
    return Path(path).with_suffix(".json")


def load_model(
    name_or_path: "str | os.PathLike[str]", *, device: "str | torch.device" = "cpu"
) -> LoadedModel:
    """Load a registry model or a weights file, strictly, into float32 on ``device``.

    Parameters
    ----------
    name_or_path : str or path-like
        A key of :data:`REGISTRY` (offline: the embedded weights, converted and cached on first use), a
        ``.pth``/``.safetensors`` file, or a BioImage Model Zoo package (a ``.zip``, or the ``rdf.yaml`` /
        ``bioimageio.yaml`` of an unpacked one) with ``pytorch_state_dict`` weights. A file's architecture
        comes from its sidecar JSON when there is one that matches the file's SHA-256, else it is inferred
        from the tensor shapes; a package's always from its weights (its description is not trusted).
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``.

    Returns
    -------
    LoadedModel

    Raises
    ------
    WeightsError
        For an unknown name, an unreadable or unsafe file, or weights of another architecture (naming the
        file and the missing, unexpected or mis-shaped keys).
    """
    dev = resolve_device(device)
    key = os.fspath(name_or_path)
    if key in REGISTRY:
        entry = REGISTRY[key]
        path = embedded_weights(key)
        state = read_state_dict(path)
        spec, name, sha256 = entry.spec, key, file_sha256(embedded_files(key)[1])
        source, intensity = f"{entry.source}, converted to fp32 in {path}", None
    else:
        path = Path(key)
        if not path.exists() and path.suffix == "" and len(path.parts) == 1:
            raise WeightsError(
                f"unknown model {key!r}: choose one of {', '.join(REGISTRY)} or give a .pth/.safetensors file"
            )
        if is_package(path):
            state, name, sha256 = read_package_weights(path)
            spec = _infer_spec(state, path)
            module = _load_strict(spec, state, path)
            return LoadedModel(module.to(dev).eval(), spec, name, str(path), sha256)
        state = read_state_dict(path)
        sha256 = file_sha256(path)
        sidecar = _sidecar(path, sha256)
        spec = sidecar[0] if sidecar else _infer_spec(state, path)
        name, source = (sidecar[1] if sidecar else "") or path.stem, str(path)
        intensity = sidecar[2] if sidecar else None
    module = _load_strict(spec, state, path)
    return LoadedModel(module.to(dev).eval(), spec, name, source, sha256, intensity)


def recorded_intensity_of(name_or_path: "str | os.PathLike[str]") -> "Intensity | None":
    """The value mapping a model was fine-tuned with, from its weights file's sidecar, without loading the
    weights: what :func:`load_model` gives as :attr:`LoadedModel.intensity`. None for a registry model, a
    package, a missing or unreadable file, or a file whose sidecar records none.

    Raises
    ------
    WeightsError
        For a sidecar that cannot be used (as :func:`load_model` would).
    """
    key = os.fspath(name_or_path)
    path = Path(key)
    if key in REGISTRY or not path.is_file() or is_package(path):
        return None
    try:
        sha256 = file_sha256(path)
    except OSError:  # unreadable: loading it says why
        return None
    sidecar = _sidecar(path, sha256)
    return None if sidecar is None else sidecar[2]


def _infer_spec(state: Mapping[str, torch.Tensor], path: Path) -> ModelSpec:
    try:
        return spec_from_state_dict(state)
    except MicrodiskSRError as exc:
        raise WeightsError(f"{path}: {exc}") from exc


def _sidecar(path: Path, sha256: str) -> "tuple[ModelSpec, str, Intensity | None] | None":
    """The architecture, the name (``info["name"]``, "" if none) and the value mapping of its training
    (``info["fine_tuning"]["config"]``, see :func:`.images.recorded_intensity`) recorded beside ``path``,
    if any."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    try:
        data = json.loads(sidecar.read_text())
        if not isinstance(data, dict) or "spec" not in data:
            raise ValueError("no 'spec' object")
        spec = ModelSpec.from_json(data["spec"])
        info = data.get("info")
        tuning = info.get("fine_tuning") if isinstance(info, dict) else None
        config = tuning.get("config") if isinstance(tuning, dict) else None
        intensity = recorded_intensity(config) if isinstance(config, dict) else None
    except (OSError, ValueError) as exc:  # InputError and JSONDecodeError are ValueErrors
        raise WeightsError(
            f"cannot use the sidecar {sidecar} of {path.name} ({exc}); fix or remove it"
        ) from exc
    recorded = data.get("sha256")
    if recorded and recorded != sha256:
        log.warning("%s describes another version of %s (SHA-256 differs); ignoring it", sidecar, path.name)
        return None
    return spec, str(info.get("name") or "") if isinstance(info, dict) else "", intensity


def _meta_network(spec: ModelSpec) -> nn.Module:
    """The network of ``spec`` with shapes but no storage: for checks, and for loading with ``assign``."""
    with torch.device("meta"):
        return spec.build()


def _fit_problems(network: nn.Module, state: Mapping[str, torch.Tensor]) -> "str | None":
    """A short summary of why ``state`` does not fit ``network``, or None if it fits."""
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {expected[k]}"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    parts = [
        f"{len(items)} {label} ({short_list(items)})"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched))
        if items
    ]
    return "; ".join(parts) or None


def _load_strict(spec: ModelSpec, state: Mapping[str, torch.Tensor], path: Path) -> nn.Module:
    network = _meta_network(spec)
    problems = _fit_problems(network, state)
    if problems:
        raise WeightsError(f"{path} does not hold weights of {spec}: keys {problems}")
    fp32 = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    broken = {k: int((~torch.isfinite(v)).sum()) for k, v in fp32.items() if v.is_floating_point()}
    broken = {k: n for k, n in broken.items() if n}
    if broken:
        raise WeightsError(
            f"{path} holds {sum(broken.values())} NaN or infinite weight(s) (in {short_list(list(broken))}): "
            "it would give blank images; use the weights of a run that did not diverge"
        )
    network.load_state_dict(fp32, strict=True, assign=True)
    return network


# --------------------------------------------------------------------------------------------------------
# Saving


def save_model(
    module_or_state_dict: "nn.Module | Mapping[str, torch.Tensor]",
    spec: ModelSpec,
    path: "str | os.PathLike[str]",
    *,
    info: "Mapping[str, Any] | None" = None,
    overwrite: bool = False,
) -> Path:
    """Save weights as ``{"params_ema": state_dict}`` (.pth) with a sidecar JSON, both atomically.

    Parameters
    ----------
    module_or_state_dict : torch.nn.Module or mapping of str to torch.Tensor
        The network (``module.``/``_orig_mod.`` wrapper prefixes are removed) or its state dict.
    spec : ModelSpec
        Its architecture; the weights must fit it exactly.
    path : path-like
        The ``.pth`` file to write; the sidecar goes to :func:`sidecar_path` (``model.json``).
    info : mapping, optional
        JSON-able provenance stored in the sidecar (training configuration, history, base model, ...).
    overwrite : bool
        Replace existing files (checkpoints the product owns); by default an existing file is an error.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        If ``path`` does not end in ``.pth``.
    WeightsError
        If the weights do not fit ``spec``.
    OutputError
        If ``path`` or its sidecar exists and ``overwrite`` is false, or the folder is not writable.
    """
    path = Path(path)
    if path.suffix.lower() != ".pth":
        raise InputError(f"models are saved as .pth (Real-ESRGAN's format), got {path.name}")
    raw = (
        module_or_state_dict.state_dict()
        if isinstance(module_or_state_dict, nn.Module)
        else module_or_state_dict
    )
    state = {
        k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
        for k, v in strip_wrapper_prefixes(raw).items()
    }
    problems = _fit_problems(_meta_network(spec), state)
    if problems:
        raise WeightsError(f"the weights to save in {path.name} do not fit {spec}: keys {problems}")
    sidecar = sidecar_path(path)
    if not overwrite:
        for target in (path, sidecar):
            if target.exists():
                raise OutputError(f"{target} exists and is not overwritten; choose another name")
    atomic_write(path, lambda tmp: torch.save({"params_ema": state}, tmp), overwrite=overwrite)
    record = {
        "format": SIDECAR_FORMAT,
        "weights": path.name,
        "sha256": file_sha256(path),
        "spec": spec.to_json(),
        "info": dict(info or {}),
    }
    write_json(sidecar, record, overwrite=overwrite)
    return path


# --------------------------------------------------------------------------------------------------------
# Inferring the architecture from a state dict


def spec_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> ModelSpec:
    """Infer the architecture and hyper-parameters of a state dict from its keys and tensor shapes.

    Each network's adapter recognises its own weights (see :mod:`.archs`): RRDBNet of any width, depth,
    growth and channel count (x4, and x2/x1 by the pixel-unshuffled input of ``conv_first``), and
    SRVGGNetCompact with PReLU activations (ReLU and leaky ReLU leave no trace in the weights: their files
    need a sidecar).

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        With basicsr key names (wrapper prefixes already removed).

    Returns
    -------
    ModelSpec

    Raises
    ------
    WeightsError
        If the keys match neither network, or leave the activation of an SRVGGNetCompact unknown.
    """
    arch, params = detect_architecture(state_dict)
    try:
        return ModelSpec(arch.name, params)
    except InputError as exc:
        raise WeightsError(f"the weights' shapes give no valid {arch.name} ({exc})") from exc
