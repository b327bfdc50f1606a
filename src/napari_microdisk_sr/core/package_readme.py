"""The README of a model package: what the network does, its value mapping and weights files, the training
recipe, the run's validation table, the parent model, its citation and licence.
"""

from collections.abc import Mapping
from typing import Any

from .. import __version__
from .intensity import recorded_intensity
from .models import LoadedModel
from .package_format import REAL_ESRGAN_CITATION, REAL_ESRGAN_DOI, TORCHSCRIPT_FILE, ValueMapping
from .package_weights import PACKAGE_WEIGHTS as WEIGHTS_FILE

__all__ = ["readme_text"]


def readme_text(
    model: LoadedModel,
    info: Mapping[str, Any],
    history: "list[dict[str, str]]",
    mapping: ValueMapping,
    files: Mapping[str, Any],
) -> str:
    """The README (Markdown) of the package of ``model``, described by its sidecar ``info``, its run's
    ``history`` rows, its value ``mapping`` and what :mod:`.export` wrote (``files``)."""
    spec = model.spec
    fine_tuning = info.get("fine_tuning", {})
    provenance = info.get("provenance", {})
    parent = provenance.get("parent", {})
    lines = [
        f"# {model.name}: x{spec.scale} super-resolution of microdisk images",
        "",
        f"Real-ESRGAN's `{spec}` network, fine-tuned on microdisk images with "
        f"napari-microdisk-sr {__version__}. Input: a 2D image ({mapping.dtype}, "
        f"{_channels_text(files['channels'])}); output: the same field with "
        f"{spec.scale}x more pixels per side (a 1/{spec.scale} of the input's pixel size).",
        "",
        "## Values",
        "",
        mapping.describe() + ".",
        "",
        "## Weights",
        "",
        f"- `{WEIGHTS_FILE}`: a flat PyTorch state dict (basicsr key names) for `{spec.arch}.py`, which "
        "needs torch only;",
        f"- `{TORCHSCRIPT_FILE}`: TorchScript, for deepImageJ in Fiji (largest difference to the state dict "
        f"on the test input: {files['torchscript_diff']:.2g} in [0, 1] units).",
        "",
        "## Training",
        "",
    ]
    lines += _recipe(fine_tuning, provenance) if fine_tuning else ["Not recorded (a bare weights file)."]
    lines += ["", "## Validation", ""]
    lines += _validation(history)
    lines += [
        "",
        "## Parent model and citation",
        "",
        f"Fine-tuned from {parent.get('name', 'a Real-ESRGAN model')}"
        + (f" (SHA-256 {parent['sha256'][:16]}...)" if parent.get("sha256") else "")
        + ", Real-ESRGAN's official weights (BSD-3-Clause). Cite:",
        "",
        f"> {REAL_ESRGAN_CITATION} doi:{REAL_ESRGAN_DOI}",
        "",
        "## Licence",
        "",
        "The architecture file, the package and the fine-tuned weights: BSD-3-Clause, as Real-ESRGAN's code "
        "and weights.",
        "",
    ]
    return "\n".join(lines)


def _recipe(fine_tuning: Mapping[str, Any], provenance: Mapping[str, Any]) -> list[str]:
    config = fine_tuning.get("config", {})
    crops = provenance.get("crops", {})
    n_crops = len(crops.get("train", [])) + len(crops.get("validation", []))
    layer_lrs = config.get("layer_lrs")
    lrs = (
        f"layer-wise {', '.join(f'{v:g}' for v in layer_lrs)} (first convolution, body, upsampler)"
        if layer_lrs
        else f"{config.get('lr', float('nan')):g}"
    )
    return [
        f"- epochs: {fine_tuning.get('epochs_done')} of {config.get('epochs')} "
        f"({fine_tuning.get('state', '?')}); saved weights: {fine_tuning.get('saved_weights', '?')}",
        f"- loss: L1; optimiser: Adam (betas {config.get('betas')}); learning rates: {lrs}, x"
        f"{config.get('lr_gamma')} every {config.get('lr_step')} epochs",
        f"- batch size {fine_tuning.get('batch_size')}, {config.get('pairs_per_epoch')} pairs per epoch of "
        f"{config.get('patch')} px HR patches, augmentation: {config.get('augment')}",
        f"- degradation (how LR patches were made): {config.get('degradation')}",
        f"- crops: {n_crops} ({len(crops.get('validation', []))} for validation), SHA-256 "
        f"{str(crops.get('sha256', '?'))[:16]}...",
        f"- frozen blocks: {config.get('freeze_blocks')}; EMA: {config.get('ema')}; "
        f"seed: {config.get('seed')}",
        f"- intensity: {recorded_intensity(config) or 'range'}; device: {provenance.get('device')}",
    ]


def _validation(history: "list[dict[str, str]]") -> list[str]:
    rows = [row for row in history if row.get("val_psnr")]
    if not rows:
        return [
            "The run recorded no validation (no history.csv, or no validation crops). Validate the model on "
            "held-out pairs of your own (for instance with `microdisk-sr evaluate`)."
        ]
    lines = [
        "PSNR (dB) and L1 on the run's held-out validation crops, per epoch (epoch 0: the parent model). "
        "SSIM was not recorded during training; `microdisk-sr evaluate` measures it on your own pairs.",
        "",
        "| epoch | validation PSNR (dB) | validation L1 |",
        "|---:|---:|---:|",
    ]
    for row in rows:
        l1 = f"{float(row['val_l1']):.4f}" if row.get("val_l1") else ""
        lines.append(f"| {row['epoch']} | {float(row['val_psnr']):.2f} | {l1} |")
    return lines


def _channels_text(channels: int) -> str:
    if channels == 1:
        return "gray, one channel: replicated to the network's RGB, its RGB output averaged"
    return "RGB" if channels == 3 else f"{channels} channels"
