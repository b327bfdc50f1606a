"""Where fine-tuning runs and metric tables go: beside the originals, never over an existing output.

The rule, shared by the widgets: an explicitly chosen folder wins; else outputs made from a crops folder go
beside it (a run) or into it (a metrics table); else outputs made from an image file go into its sibling
``<stem>_microdisk_sr/`` folder (:func:`~.io.output_dir_for`). Data that came from no file (a sample, an array
made in the console) has no natural place: the user is asked to choose a folder.
"""

import os
import re
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError
from .io import make_new_dir, numbered_paths, output_dir_for

RUN_PREFIX = "finetune_"
METRICS_FILE = "metrics.csv"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_name(text: str, *, fallback: str = "data") -> str:
    """``text`` as a portable file-name part: runs of characters other than ``A-Za-z0-9_-`` become ``_``.

    >>> safe_name("microdisk scene (LR)")
    'microdisk_scene_LR'
    """
    name = _UNSAFE.sub("_", text).strip("_-")
    return name or fallback


def unique_name(base: str, taken: "set[str]") -> str:
    """``base``, or ``base 2``, ``base 3``, ... if taken (names of crop sets, of methods in a table)."""
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base} {k}"
    return name


def _base_folder(
    what: str,
    *,
    output_dir: "str | os.PathLike[str] | None",
    crops_folder: "str | os.PathLike[str] | None",
    source_path: "str | os.PathLike[str] | None",
    beside_crops: bool,
) -> Path:
    if output_dir is not None:
        return Path(output_dir)
    if crops_folder is not None:
        folder = Path(crops_folder)
        return folder.parent if beside_crops else folder
    if source_path is not None:
        return output_dir_for(source_path)
    raise OutputError(
        f"the {what} came from no file, so it has no folder of its own: choose an output folder"
    )


def run_dir_for(
    source_name: str,
    *,
    output_dir: "str | os.PathLike[str] | None" = None,
    crops_folder: "str | os.PathLike[str] | None" = None,
    source_path: "str | os.PathLike[str] | None" = None,
) -> Path:
    """A new run folder ``finetune_<source name>`` (``-1``, ``-2``, ... if taken), created here.

    Creating it claims the name, so two sessions starting runs from the same crops at once never share a
    folder; a caller whose run does not start removes it again (it is empty).

    Parameters
    ----------
    source_name : str
        Name of the crops' source (crop set, layer or folder), made file-safe.
    output_dir : path, optional
        A folder chosen by the user: the run goes into it.
    crops_folder : path, optional
        The folder the crops were read from: the run goes beside it.
    source_path : path, optional
        The image file the crops were cut from: the run goes into its ``<stem>_microdisk_sr/`` folder.

    Raises
    ------
    OutputError
        If none of the three places is given.
    """
    base = _base_folder(
        "crops", output_dir=output_dir, crops_folder=crops_folder, source_path=source_path, beside_crops=True
    )
    return make_new_dir(base / f"{RUN_PREFIX}{safe_name(source_name)}")


def metrics_path_for(
    *,
    output_dir: "str | os.PathLike[str] | None" = None,
    crops_folder: "str | os.PathLike[str] | None" = None,
    source_path: "str | os.PathLike[str] | None" = None,
) -> Path:
    """A free path for an evaluation's table: ``metrics.csv``, else ``metrics-1.csv``, ``metrics-2.csv``, ...

    The ``.json`` sibling of the path returned is free too; the folder may not exist yet.

    Parameters
    ----------
    output_dir : path, optional
        A folder chosen by the user.
    crops_folder : path, optional
        The folder of the crops evaluated: the table goes into it.
    source_path : path, optional
        The reference image file: the table goes into its ``<stem>_microdisk_sr/`` folder.

    Raises
    ------
    OutputError
        If none of the three places is given, or every name is taken.
    """
    base = _base_folder(
        "reference",
        output_dir=output_dir,
        crops_folder=crops_folder,
        source_path=source_path,
        beside_crops=False,
    )
    return free_table_path(base / METRICS_FILE)


def free_table_path(csv_path: "str | os.PathLike[str]") -> Path:
    """``csv_path``, else its first ``-1``, ``-2``, ... variant, where neither it nor its ``.json`` exists.

    The name free now: the table takes its name when it is written (see :func:`table_names`).

    Raises
    ------
    OutputError
        If every name is taken.
    """
    for path in table_names(csv_path):
        if not path.exists():
            return path
    raise OutputError(f"too many tables named like {csv_path}; clean the folder")


def table_names(csv_path: "str | os.PathLike[str]") -> Iterator[Path]:
    """The names a table may take: ``csv_path`` and its ``-1``, ``-2``, ... variants whose ``.json`` is free.

    For :func:`~.io.write_csv`'s ``names``: the CSV written claims its name, and the JSON goes beside it.
    """
    return (path for path in numbered_paths(csv_path) if not path.with_suffix(".json").exists())
