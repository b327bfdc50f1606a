"""napari-microdisk-sr: fine-tune Real-ESRGAN on microdisks, inside napari or headless.

Importing the package loads neither Qt nor napari; the widgets live in ``_widgets`` and are
imported by napari through the manifest only.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-microdisk-sr")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
