"""A fine-tuned model as a BioImage Model Zoo package (bioimage.io model format 0.5) with TorchScript weights.

A package is one zip file that the zoo's tools (``bioimageio.core``, deepImageJ in Fiji, ilastik, ...) run
without this plugin. It holds:

- ``weights.pth``: the network's **flat** state dict (the zoo's loader is strict, so no ``params_ema``
  wrapper), with ``<Network>.py``, the network's source made self-contained (torch only), as its architecture;
- ``weights_torchscript.pt``: the same network scripted with TorchScript, for deepImageJ/Fiji;
- axes that say the scale: output ``y``/``x`` refer to the input's with a quarter of its pixel size (x4),
  and a halo of the network's tile padding;
- the value mapping of :mod:`.images` as pre- and post-processing: a fixed linear map of the integer range (or
  the bit depth) to ``[0, 1]``, or the min/max of a float image; the output clipped to ``[0, 1]`` and mapped
  back to the input's range (as float32). The format has no post-processing that inverts a percentile map
  (it would need the input's percentiles), so percentile normalisation is refused: export with ``range``
  or ``bits:N``;
- test input and output tensors computed with the package's own files, a cover (input | output), and a README
  with the training recipe, the run's validation table, the parent model, its citation and licences.

Building and validating the description needs the optional ``bioimageio.spec`` (``pip install
"napari-microdisk-sr[bioimageio]"``). Reading a package back (:func:`.models.load_model`) needs only PyYAML.
What the package declares (input types, value mapping, file names, citation) is :mod:`.package_format`'s; the
README's text is :mod:`.package_readme`'s.
"""

import ast
import builtins
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from .errors import InputError, OutputError
from .intensity import Intensity, recorded_intensity
from .io import atomic_write, ensure_writable_dir, read_csv
from .models import LoadedModel, load_model, sidecar_path
from .package_format import (
    REAL_ESRGAN_CITATION,
    REAL_ESRGAN_DOI,
    SIZE_STEP,
    TORCHSCRIPT_FILE,
    ValueMapping,
    from_unit,
    to_unit,
    value_mapping,
)
from .package_readme import readme_text
from .package_weights import PACKAGE_WEIGHTS as WEIGHTS_FILE
from .sample import make_scene
from .train.artifacts import HISTORY_FILE, MODEL_FILE
from .train.checkpoint import CHECKPOINT_FILE
from .weights import file_sha256

log = logging.getLogger(__name__)

__all__ = [
    "ExportResult",
    "architecture_source",
    "export_package",
]

_TEST_SEED = 7


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_package` wrote and measured.

    Attributes
    ----------
    path : Path
        The package (zip).
    size_bytes : int
        Its size.
    seconds : float
        Time to build, check and write it.
    torchscript_max_abs_diff : float
        Largest difference between the TorchScript and the eager network on the test input (network units,
        ``[0, 1]``).
    """

    path: Path
    size_bytes: int
    seconds: float
    torchscript_max_abs_diff: float


# --------------------------------------------------------------------------------------------------------
# The architecture file


def architecture_source(network: type[nn.Module]) -> str:
    """The source of ``network`` as one self-contained module that imports only torch and the standard
    library.

    The class is taken from this package together with everything it refers to (helper functions, constants,
    exception classes, other modules' classes), each once and before its first use, so that the zoo's tools,
    Fiji or a colleague's script can build the network without installing this plugin.
    """
    parts: dict[str, str] = {}
    imports: set[str] = set()
    _collect(network, parts, imports)
    header = (
        f'"""{network.__name__}, as written in napari-microdisk-sr {__version__} (BSD-3-Clause); '
        'self-contained."""\n\n'
    )
    ordered = sorted(imports, key=lambda line: (line.split()[1], line))
    return header + "\n".join(ordered) + "\n\n\n" + "\n\n\n".join(parts.values()) + "\n"


def _collect(obj: Any, parts: dict[str, str], imports: set[str]) -> None:
    """Add ``obj``'s source to ``parts`` after the sources of the globals it uses."""
    name = obj.__name__
    if name in parts:
        return
    parts[name] = ""  # reserved: cycles end here
    module_globals = sys.modules[obj.__module__].__dict__
    source = inspect.getsource(obj)
    used = {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}
    if inspect.isclass(obj):
        used |= {base.__name__ for base in obj.__bases__}
    for ref in sorted(used - {name}):
        if ref not in module_globals or hasattr(builtins, ref):
            continue
        value = module_globals[ref]
        if inspect.ismodule(value):
            alias = value.__name__.rpartition(".")
            imports.add(
                f"import {value.__name__}"
                if ref == value.__name__
                else f"from {alias[0]} import {alias[2]}"
                if alias[2] == ref
                else f"import {value.__name__} as {ref}"
            )
        elif (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__.startswith(
            __package__.partition(".")[0]
        ):
            _collect(value, parts, imports)
        elif inspect.isclass(value) or inspect.isfunction(value):
            imports.add(f"from {value.__module__} import {ref}")
        else:
            parts[ref] = f"{ref} = {value!r}"
    del parts[name]  # the dependencies come first
    parts[name] = source.rstrip()


_GRAY_WRAPPER = '''


class Gray{name}({name}):
    """{name} for one-channel images: the channel is replicated to RGB, the RGB output clipped to [0, 1]
    and averaged (as napari-microdisk-sr does for gray images)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale ``x`` of shape (N, 1, H, W), values in [0, 1], to (N, 1, H * scale, W * scale)."""
        rgb = super().forward(x.expand(-1, 3, -1, -1))
        return rgb.clamp(0.0, 1.0).mean(dim=1, keepdim=True)
'''
"""Appended to the architecture file of a gray package; the state dict stays the RGB network's."""


def _load_architecture(path: Path, class_name: str) -> type[nn.Module]:
    """The class ``class_name`` of the architecture file ``path``, imported as the zoo's tools import it."""
    spec = importlib.util.spec_from_file_location(f"_microdisk_sr_package_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, class_name)


# --------------------------------------------------------------------------------------------------------
# Export


def _weights_of(source: Path) -> Path:
    """The weights file of a run folder or a weights file."""
    if source.is_dir():
        weights = source / MODEL_FILE
        if not weights.is_file():
            state = (
                f"its run has saved no model yet ({CHECKPOINT_FILE} only): let it finish, or stop it"
                if (source / CHECKPOINT_FILE).exists()
                else "it is not a fine-tuning run folder"
            )
            raise InputError(f"{source} holds no {MODEL_FILE}: {state}, then export")
        return weights
    if not source.exists():
        raise InputError(f"{source} does not exist; give a run folder or a weights file (.pth/.safetensors)")
    return source


def _sidecar_info(weights: Path, sha256: str) -> dict[str, Any]:
    """The ``info`` of the model's sidecar JSON, or {} (none, or one for other weights)."""
    sidecar = sidecar_path(weights)
    if not sidecar.is_file():
        return {}
    data = json.loads(sidecar.read_text())
    if data.get("sha256") not in (None, sha256) or not isinstance(data.get("info"), dict):
        return {}
    return data["info"]


def export_package(
    source: "str | os.PathLike[str]",
    out: "str | os.PathLike[str]",
    *,
    dtype: "str | None" = None,
    intensity: "Intensity | str | None" = None,
    gray: bool = False,
    authors: "tuple[str, ...]" = (),
    name: "str | None" = None,
) -> ExportResult:
    """Write a fine-tuned model (a run folder or a weights file) as a validated bioimage.io model package.

    Parameters
    ----------
    source : path-like
        A fine-tuning run folder (its ``model.pth`` with ``model.json`` and ``history.csv``) or a weights file
        of one of the package's networks.
    out : path-like
        The package to write, a ``.zip``; never overwritten.
    dtype : {"uint8", "uint16", "float32"}, optional
        The input type the package declares. By default uint16 when the intensity is ``bits:N``, else
        uint8.
    intensity : Intensity or str, optional
        The value mapping of integer input: ``range`` or ``bits:N`` (12 for a 12-bit camera writing uint16
        files), see :class:`.intensity.Intensity`; by default the run's own (``auto`` resolves to ``range``
        for uint8), else the dtype's full range. Percentile maps cannot be expressed and are refused.
    gray : bool
        Declare a one-channel input and output (microscope images) instead of the network's RGB: the
        architecture file wraps the network, replicating the channel in and averaging the three out
        (clipped to [0, 1] first), as :mod:`.images` does for gray layers. The weights stay the RGB network's.
    authors : tuple of str
        Names of the model's authors (default: "napari-microdisk-sr user").
    name : str, optional
        The package's name (default: from the model's).

    Returns
    -------
    ExportResult

    Raises
    ------
    InputError
        For a run without a model yet, an unknown network, bad options or ``bioimageio.spec`` missing.
    OutputError
        If ``out`` exists or is not a ``.zip``, or the folder is not writable.
    """
    started = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise OutputError(f"a model package is a .zip file, not {out.name}")
    if out.exists():
        raise OutputError(f"{out} exists and is not overwritten; choose another name")
    spec_lib = _bioimageio_spec()
    weights = _weights_of(Path(source))
    model = load_model(weights)
    if gray and (model.spec.in_channels, model.spec.out_channels) != (3, 3):
        raise InputError(f"a gray package wraps an RGB network; {model.name} is {model.spec}")
    info = _sidecar_info(weights, model.sha256)
    config = info.get("fine_tuning", {}).get("config", {})
    given = intensity is not None
    mapping = value_mapping(
        dtype, Intensity.parse(intensity) if given else recorded_intensity(config), given=given
    )
    # the history beside a run's model (one with a sidecar) is its run's
    history = _history(weights.parent / HISTORY_FILE) if info else []
    ensure_writable_dir(out.parent)
    with tempfile.TemporaryDirectory(prefix=".microdisk-sr-export-", dir=out.parent) as tmp:
        folder = Path(tmp)
        files = _write_files(folder, model, mapping, gray=gray)
        readme = folder / "README.md"
        readme.write_text(readme_text(model, info, history, mapping, files))
        try:
            descr = _description(folder, model, info, mapping, files, authors, name)
        except ValueError as exc:  # pydantic's ValidationError: a description the format refuses
            raise OutputError(
                f"cannot describe {model.name} as a bioimage.io model: {_first_line(exc)}"
            ) from exc
        atomic_write(out, lambda tmp_zip: _save_package(spec_lib, descr, tmp_zip))
    seconds = time.perf_counter() - started
    log.info("exported %s to %s in %.1f s", model.name, out, seconds)
    return ExportResult(out, out.stat().st_size, seconds, files["torchscript_diff"])


def _bioimageio_spec() -> Any:
    try:
        import bioimageio.spec as spec_lib
        import bioimageio.spec.model.v0_5  # noqa: F401  (the model format used below)
    except ImportError as exc:
        raise InputError(
            'exporting a model package needs bioimageio.spec: pip install "napari-microdisk-sr[bioimageio]"'
        ) from exc
    return spec_lib


def _history(path: Path) -> list[dict[str, str]]:
    return read_csv(path) if path.is_file() else []


def _write_files(folder: Path, model: LoadedModel, mapping: ValueMapping, *, gray: bool) -> dict[str, Any]:
    """Write the weights, the architecture, TorchScript, the test tensors and the cover into ``folder``."""
    spec = model.spec
    network = spec.architecture.network
    state = {k: v.detach().cpu().contiguous() for k, v in model.module.state_dict().items()}
    torch.save(state, folder / WEIGHTS_FILE)
    arch_file = folder / f"{network.__name__}.py"
    callable_name = f"Gray{network.__name__}" if gray else network.__name__
    wrapper = _GRAY_WRAPPER.format(name=network.__name__) if gray else ""
    arch_file.write_text(architecture_source(network) + wrapper)
    channels = 1 if gray else spec.in_channels

    # the package's own network: its architecture file and its weights file, loaded strictly
    own = _load_architecture(arch_file, callable_name)(**spec.kwargs)
    own.load_state_dict(torch.load(folder / WEIGHTS_FILE, weights_only=True), strict=True)
    own.eval()
    size_min = _round_up(2 * spec.tile_pad + SIZE_STEP, SIZE_STEP)
    test_input = _test_input(size_min + 2 * SIZE_STEP, channels, mapping)
    unit = to_unit(test_input, mapping)
    # traced, not scripted (the networks' int scale factors are not TorchScript); torch >= 2.10 calls
    # TorchScript deprecated, but deepImageJ reads nothing else
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit", category=FutureWarning)
        traced = torch.jit.trace(own, torch.from_numpy(unit[..., :size_min, :size_min]))
        traced.save(str(folder / TORCHSCRIPT_FILE))
        scripted_out = torch.jit.load(str(folder / TORCHSCRIPT_FILE))(torch.from_numpy(unit)).numpy()
        eager = own(torch.from_numpy(unit)).numpy()
    test_output = from_unit(eager, mapping)
    np.save(folder / "test_input.npy", test_input)
    np.save(folder / "test_output.npy", test_output)
    _write_cover(folder / "cover.png", unit[0], np.clip(eager[0], 0, 1), spec.scale)
    return {
        "architecture": arch_file,
        "callable": callable_name,
        "channels": channels,
        "size_min": size_min,
        "torchscript_diff": float(np.abs(scripted_out - eager).max()),
    }


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _test_input(size: int, channels: int, mapping: ValueMapping) -> np.ndarray:
    """A deterministic synthetic microdisk field, ``(1, channels, size, size)``, of the input type."""
    scene = make_scene(seed=_TEST_SEED, size=(size, size), rgb=channels == 3, dtype="uint16")
    lr = scene.lr.astype(np.float64) / 65535.0
    planes = lr[..., None] if lr.ndim == 2 else lr
    planes = np.repeat(planes, channels, axis=-1) if planes.shape[-1] != channels else planes
    values = (
        planes.astype(np.float32)
        if not mapping.fixed
        else np.rint(planes * mapping.high).astype(mapping.dtype)
    )
    return np.ascontiguousarray(values.transpose(2, 0, 1)[None])


def _write_cover(path: Path, lr: np.ndarray, sr: np.ndarray, scale: int) -> None:
    """LR (nearest-neighbour enlarged) | SR side by side, an 8-bit PNG twice as wide as high."""
    import imageio.v3 as iio

    enlarged = lr.repeat(scale, axis=1).repeat(scale, axis=2)
    both = np.concatenate([enlarged, sr], axis=2)
    pixels = np.rint(np.clip(both, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    iio.imwrite(path, pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


# --------------------------------------------------------------------------------------------------------
# The description


def _description(
    folder: Path,
    model: LoadedModel,
    info: Mapping[str, Any],
    mapping: ValueMapping,
    files: Mapping[str, Any],
    authors: "tuple[str, ...]",
    name: "str | None",
) -> Any:
    from bioimageio.spec.model import v0_5 as m

    spec = model.spec
    size = m.ParameterizedSize(min=files["size_min"], step=SIZE_STEP)
    channels = files["channels"]
    channel_names = {1: ["gray"], 3: ["R", "G", "B"]}.get(channels) or [f"c{i}" for i in range(channels)]
    input_axes = [
        m.BatchAxis(),
        m.ChannelAxis(channel_names=channel_names),
        m.SpaceInputAxis(id=m.AxisId("y"), size=size),
        m.SpaceInputAxis(id=m.AxisId("x"), size=size),
    ]
    output_axes = [
        m.BatchAxis(),
        m.ChannelAxis(channel_names=channel_names),
        *(
            m.SpaceOutputAxisWithHalo(
                id=m.AxisId(axis),
                size=m.SizeReference(tensor_id=m.TensorId("input"), axis_id=m.AxisId(axis)),
                scale=1 / spec.scale,
                halo=spec.tile_pad * spec.scale,
            )
            for axis in ("y", "x")
        ),
    ]
    to_float = m.EnsureDtypeDescr(kwargs=m.EnsureDtypeKwargs(dtype="float32"))
    if mapping.fixed:
        span = mapping.high - mapping.low
        scale_in = m.ScaleLinearDescr(kwargs=m.ScaleLinearKwargs(gain=1 / span, offset=-mapping.low / span))
        back = [m.ScaleLinearDescr(kwargs=m.ScaleLinearKwargs(gain=span, offset=mapping.low))]
        input_data = m.IntervalOrRatioDataDescr(type=mapping.dtype, range=(mapping.low, mapping.high))
    else:
        scale_in = m.ScaleRangeDescr(kwargs=m.ScaleRangeKwargs(axes=[m.AxisId("channel"), *_yx(m)]))
        back = []
        input_data = m.IntervalOrRatioDataDescr(type="float32")
    clip = m.ClipDescr(kwargs=m.ClipKwargs(min=0.0, max=1.0))
    weights_descr = m.WeightsDescr(
        pytorch_state_dict=m.PytorchStateDictWeightsDescr(
            source=folder / WEIGHTS_FILE,
            sha256=file_sha256(folder / WEIGHTS_FILE),
            architecture=m.ArchitectureFromFileDescr(
                source=files["architecture"],
                sha256=file_sha256(files["architecture"]),
                callable=files["callable"],
                kwargs=spec.kwargs,
            ),
            pytorch_version=m.Version(torch.__version__.split("+")[0]),
        ),
        torchscript=m.TorchscriptWeightsDescr(
            source=folder / TORCHSCRIPT_FILE,
            sha256=file_sha256(folder / TORCHSCRIPT_FILE),
            pytorch_version=m.Version(torch.__version__.split("+")[0]),
            parent="pytorch_state_dict",
        ),
    )
    fine_tuning = info.get("fine_tuning", {})
    config = fine_tuning.get("config", {})
    return m.ModelDescr(
        name=_package_name(name or f"Microdisk SR x{spec.scale} {model.name}"),
        description=(
            f"x{spec.scale} super-resolution of microdisk images: Real-ESRGAN's {spec.arch} fine-tuned with "
            "napari-microdisk-sr"
        ),
        authors=[m.Author(name=a) for a in (authors or ("napari-microdisk-sr user",))],
        cite=[m.CiteEntry(text=REAL_ESRGAN_CITATION, doi=m.Doi(REAL_ESRGAN_DOI))],
        license="BSD-3-Clause",
        documentation=m.FileDescr(source=folder / "README.md"),
        covers=[m.FileDescr(source=folder / "cover.png")],
        tags=["super-resolution", "microdisks", "real-esrgan", "pytorch", "2d", "napari-microdisk-sr"],
        inputs=[
            m.InputTensorDescr(
                id=m.TensorId("input"),
                axes=input_axes,
                data=input_data,
                test_tensor=m.FileDescr(source=folder / "test_input.npy"),
                preprocessing=[to_float, scale_in, to_float],
            )
        ],
        outputs=[
            m.OutputTensorDescr(
                id=m.TensorId("output"),
                axes=output_axes,
                data=m.IntervalOrRatioDataDescr(type="float32", range=(mapping.low, mapping.high)),
                test_tensor=m.FileDescr(source=folder / "test_output.npy"),
                postprocessing=[clip, *back, to_float],
            )
        ],
        weights=weights_descr,
        config=m.Config(
            bioimageio=m.BioimageioConfig(
                architecture_type=spec.arch,
                model_parameter_count=sum(p.numel() for p in model.module.parameters()),
                training=m.TrainingDetails(
                    training_epochs=fine_tuning.get("epochs_done"),
                    training_batch_size=fine_tuning.get("batch_size"),
                    initial_learning_rate=config.get("lr"),
                    loss_function="L1" if fine_tuning else None,
                    optimizer="Adam" if fine_tuning else None,
                ),
            ),
            napari_microdisk_sr={
                "version": __version__,
                "model": {"name": model.name, "spec": spec.to_json(), "sha256": model.sha256},
                "value_mapping": mapping.describe(),
                "provenance": info.get("provenance", {}),
            },
        ),
    )


def _yx(m: Any) -> list[Any]:
    return [m.AxisId("y"), m.AxisId("x")]


def _package_name(text: str) -> str:
    """``text`` with the characters the zoo refuses in names replaced, 5 to 64 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", text).strip()[:64]
    return cleaned if len(cleaned) >= 5 else f"{cleaned} model"


def _save_package(spec_lib: Any, descr: Any, path: Path) -> None:
    """Write ``descr`` with its files as a zip to ``path``; bioimageio.spec validates the written package."""
    path.unlink()  # atomic_write's placeholder: bioimageio.spec writes a new file
    try:
        spec_lib.save_bioimageio_package(descr, output_path=path)
    except ValueError as exc:  # an invalid package; pydantic's ValidationError is a ValueError
        raise OutputError(f"the package would be invalid: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
