"""Reading ncnn exports (``.param`` + ``.bin``) onto our networks' state dicts.

``.param`` is text: magic ``7767517``, then ``layer_count blob_count``, then one line per layer. ``.bin``
holds the layers' data in ``.param`` order: a Convolution's weights after a 4-byte tag (float16 or
float32), padded to 4 bytes, then its float32 biases; a PReLU's float32 slopes. Real-ESRGAN's exports list
the Convolution and PReLU layers in the order of the network's modules, which is how :func:`read_ncnn`
maps them.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import WeightsError

__all__ = ["read_ncnn"]


@dataclass(frozen=True)
class _NcnnLayer:
    type: str
    name: str
    params: dict[str, str]

    def int_param(self, key: str, default: int) -> int:
        try:
            return int(self.params.get(key, default))
        except ValueError as exc:
            raise WeightsError(f"ncnn layer {self.name}: {key}={self.params[key]} is not an integer") from exc


_NCNN_MAGIC = "7767517"
_NCNN_FP16_TAG = 0x01306B47
_NCNN_FP32_TAG = 0
_NCNN_NO_DATA_LAYERS = {"Input", "Split", "Concat", "Eltwise", "Interp", "BinaryOp", "PixelShuffle"}


def _parse_ncnn_param(path: Path) -> list[_NcnnLayer]:
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not lines or lines[0] != [_NCNN_MAGIC] or len(lines) < 2:
        raise WeightsError(f"{path} is not an ncnn .param file (no magic number {_NCNN_MAGIC})")
    layers = []
    try:
        layer_count = int(lines[1][0])
        for tokens in lines[2:]:
            n_blobs = int(tokens[2]) + int(tokens[3])
            if len(tokens) < 4 + n_blobs:
                raise ValueError(f"layer {tokens[1]} names fewer than its {n_blobs} blobs")
            params = dict(item.split("=", 1) for item in tokens[4 + n_blobs :])
            layers.append(_NcnnLayer(tokens[0], tokens[1], params))
    except (ValueError, IndexError) as exc:
        raise WeightsError(f"{path} is malformed near line {len(layers) + 3} ({exc})") from exc
    if len(layers) != layer_count:
        raise WeightsError(f"{path} announces {layer_count} layers but lists {len(layers)}")
    return layers


def _template_layers(template: Mapping[str, torch.Tensor]) -> list[tuple[str, list[str]]]:
    """Group state-dict keys by module, in order: [(module name, [its parameter keys])]."""
    groups: list[tuple[str, list[str]]] = []
    for key in template:
        module = key.rpartition(".")[0]
        if groups and groups[-1][0] == module:
            groups[-1][1].append(key)
        else:
            groups.append((module, [key]))
    return groups


class _BinReader:
    """Sequential reader of an ncnn .bin file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.offset = 0

    def _take(self, n_bytes: int, what: str) -> bytes:
        end = self.offset + n_bytes
        if end > len(self.data):
            raise WeightsError(f"{self.path} ends early (truncated) while reading {what}")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def floats(self, count: int, what: str) -> np.ndarray:
        """``count`` untagged float32 values, in a new (writable) array."""
        return np.frombuffer(self._take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged_floats(self, count: int, what: str) -> np.ndarray:
        """A tag (fp16 or fp32) then ``count`` values, padded to 4 bytes; returned as a new float32 array."""
        tag = int(np.frombuffer(self._take(4, what), dtype="<u4")[0])
        if tag == _NCNN_FP16_TAG:
            values = np.frombuffer(self._take(2 * count, what), dtype="<f2").astype(np.float32)
            self._take(-2 * count % 4, what)
            return values
        if tag == _NCNN_FP32_TAG:
            return self.floats(count, what)
        raise WeightsError(
            f"{self.path}: {what} is stored as 0x{tag:08x}, not float16 or float32 (quantised?)"
        )

    def check_consumed(self) -> None:
        left = len(self.data) - self.offset
        if left:
            raise WeightsError(
                f"{self.path} has {left} bytes left after the last layer; it does not match the network"
            )


def read_ncnn(
    param_path: "str | os.PathLike[str]",
    bin_path: "str | os.PathLike[str]",
    template: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Map an ncnn export (``.param`` + ``.bin``) onto a network's state dict.

    The export's Convolution and PReLU layers must come in the order of the network's modules in
    ``template`` (true of Real-ESRGAN's exports of RRDBNet and SRVGGNetCompact), have the same shapes, be
    "same" 3x3 convolutions (stride 1, dilation 1, padding 1) with biases, and use up the ``.bin`` exactly.

    Parameters
    ----------
    param_path, bin_path : path-like
        The ncnn graph (text) and its weights (binary).
    template : mapping of str to torch.Tensor
        The network's ``state_dict()``; only keys, order and shapes are used (``meta`` tensors will do).

    Returns
    -------
    dict of str to torch.Tensor
        float32 tensors with the template's keys and shapes (fp16 exports are widened exactly).

    Raises
    ------
    WeightsError
        When the export does not match the template or the ``.bin`` is truncated or too long.
    """
    param_path, bin_path = Path(param_path), Path(bin_path)
    weighted = []
    for layer in _parse_ncnn_param(param_path):
        if layer.type in ("Convolution", "PReLU"):
            weighted.append(layer)
        elif layer.type not in _NCNN_NO_DATA_LAYERS:
            raise WeightsError(f"{param_path}: layer {layer.name} of type {layer.type} is not supported")
    groups = _template_layers(template)
    if len(weighted) != len(groups):
        raise WeightsError(
            f"{param_path} has {len(weighted)} Convolution/PReLU layers, "
            f"the network has {len(groups)} modules with parameters"
        )
    reader = _BinReader(bin_path)
    state: dict[str, torch.Tensor] = {}
    for layer, (module, keys) in zip(weighted, groups, strict=True):
        shapes = [tuple(template[key].shape) for key in keys]
        if layer.type == "Convolution":
            weight, bias = _read_convolution(layer, module, shapes, reader, param_path)
            state[keys[0]], state[keys[1]] = weight, bias
        else:
            state[keys[0]] = _read_prelu(layer, module, shapes, reader, param_path)
    reader.check_consumed()
    return state


def _read_convolution(
    layer: _NcnnLayer, module: str, shapes: "list[tuple[int, ...]]", reader: _BinReader, param_path: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    num_output = layer.int_param("0", 0)
    kernel = layer.int_param("1", 0)
    weight_size = layer.int_param("6", 0)
    if len(shapes) != 2 or len(shapes[0]) != 4:
        raise WeightsError(
            f"{param_path}: Convolution {layer.name} meets {module}, which is not a convolution"
        )
    out_ch, in_ch, kh, kw = shapes[0]
    geometry = {
        "kernel height": (layer.int_param("11", kernel), kh),
        "stride": (layer.int_param("3", 1), 1),
        "stride height": (layer.int_param("13", layer.int_param("3", 1)), 1),
        "dilation": (layer.int_param("2", 1), 1),
        "dilation height": (layer.int_param("12", layer.int_param("2", 1)), 1),
        "padding": (layer.int_param("4", 0), kw // 2),
        "bias term": (layer.int_param("5", 0), 1),
        "int8 scale term": (layer.int_param("8", 0), 0),
    }
    found = (num_output, weight_size, kernel)
    wanted = (out_ch, out_ch * in_ch * kh * kw, kw)
    if found != wanted or any(have != need for have, need in geometry.values()):
        raise WeightsError(
            f"{param_path}: Convolution {layer.name} ({num_output} outputs, {weight_size} weights, "
            f"kernel {kernel}) does not match {module} of shape {shapes[0]}"
        )
    weight = reader.tagged_floats(weight_size, f"the weights of {layer.name}").reshape(shapes[0])
    bias = reader.floats(num_output, f"the biases of {layer.name}")
    return torch.from_numpy(weight), torch.from_numpy(bias)


def _read_prelu(
    layer: _NcnnLayer, module: str, shapes: "list[tuple[int, ...]]", reader: _BinReader, param_path: Path
) -> torch.Tensor:
    num_slope = layer.int_param("0", 0)
    if shapes != [(num_slope,)]:
        raise WeightsError(
            f"{param_path}: PReLU {layer.name} with {num_slope} slopes does not match {module} {shapes}"
        )
    return torch.from_numpy(reader.floats(num_slope, f"the slopes of {layer.name}"))
