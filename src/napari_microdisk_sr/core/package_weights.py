"""Reading back the weights of a BioImage Model Zoo package (the packages :mod:`.export` writes).

A package is a ``.zip``, or an unpacked folder named by its ``rdf.yaml``/``bioimageio.yaml``; its
``pytorch_state_dict`` weights are read safely (``weights_only``) and checked against the SHA-256 its
description records. Its architecture is inferred from the weights by :mod:`.models` (the description is not
trusted).
"""

import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import WeightsError
from .weights import file_sha256, read_state_dict

__all__ = ["PACKAGE_DESCRIPTIONS", "PACKAGE_WEIGHTS", "is_package", "read_package_weights"]

PACKAGE_DESCRIPTIONS = ("rdf.yaml", "bioimageio.yaml")
"""The names of a BioImage Model Zoo package's description file (``rdf.yaml``: the older one)."""
PACKAGE_WEIGHTS = "weights.pth"
"""The flat state dict inside the packages that :mod:`.export` writes."""


def is_package(path: "str | os.PathLike[str]") -> bool:
    """Whether ``path`` names a model package: a ``.zip``, or a package's ``rdf.yaml``/``bioimageio.yaml``."""
    path = Path(path)
    return path.suffix.lower() == ".zip" or path.name in PACKAGE_DESCRIPTIONS


def read_package_weights(path: "str | os.PathLike[str]") -> "tuple[dict[str, torch.Tensor], str, str]":
    """The ``pytorch_state_dict`` weights of a model package, read safely (``weights_only``).

    Parameters
    ----------
    path : path-like
        A package ``.zip``, or the ``rdf.yaml``/``bioimageio.yaml`` of an unpacked package.

    Returns
    -------
    state_dict : dict of str to torch.Tensor
    name : str
        The package's name.
    sha256 : str
        Of the weights file, checked against the one the description records.

    Raises
    ------
    WeightsError
        For a file that is not a model package, one without PyTorch state-dict weights, or weights whose
        SHA-256 differs from the description's.
    """
    import yaml  # PyYAML: napari's dependency, and ours

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="microdisk-sr-package-") as tmp:
        try:
            if path.suffix.lower() == ".zip":
                with zipfile.ZipFile(path) as archive:
                    described = [n for n in PACKAGE_DESCRIPTIONS if n in archive.namelist()]
                    if not described:
                        names = " or ".join(PACKAGE_DESCRIPTIONS)
                        raise WeightsError(f"{path} is not a model package: it holds no {names}")
                    rdf = yaml.safe_load(archive.read(described[0]))
                    entry = _state_dict_entry(rdf, path)
                    weights = Path(tmp) / PACKAGE_WEIGHTS
                    with archive.open(_member(entry["source"], path)) as src, open(weights, "wb") as dst:
                        shutil.copyfileobj(src, dst)
            else:
                rdf = yaml.safe_load(path.read_text())
                entry = _state_dict_entry(rdf, path)
                weights = path.parent / _member(entry["source"], path)
                if not weights.is_file():
                    raise WeightsError(f"the weights {weights.name} that {path} names are missing beside it")
        except (OSError, KeyError, zipfile.BadZipFile, yaml.YAMLError) as exc:
            raise WeightsError(f"cannot read the model package {path}: {exc}") from exc
        if weights.suffix != ".pth":  # read_state_dict refuses names it does not know; the content decides
            renamed = Path(tmp) / "weights-copy.pth"
            shutil.copyfile(weights, renamed)
            weights = renamed
        sha256 = file_sha256(weights)
        if entry.get("sha256") and entry["sha256"] != sha256:
            raise WeightsError(f"the weights in {path} do not match the SHA-256 its description records")
        return read_state_dict(weights), str(rdf.get("name") or path.stem), sha256


def _state_dict_entry(rdf: Any, path: Path) -> Mapping[str, Any]:
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        raise WeightsError(f"{path} does not describe a bioimage.io model")
    entry = (rdf.get("weights") or {}).get("pytorch_state_dict")
    if not isinstance(entry, dict) or not isinstance(entry.get("source"), str):
        raise WeightsError(f"{path} has no pytorch_state_dict weights, which the networks here need")
    return entry


def _member(source: str, path: Path) -> str:
    """The weights' file name inside the package; URLs and paths leaving it are refused."""
    if "://" in source or source.startswith("/") or ".." in Path(source).parts:
        raise WeightsError(f"{path} points to weights outside the package ({source})")
    return source
