"""Loading Triton so that it cannot crash napari on Linux machines drawing with Mesa's software OpenGL.

PyTorch imports Triton (installed with its CUDA wheels) the first time an optimiser is created. Triton's
native library carries its own LLVM. When napari draws with Mesa's software OpenGL (llvmpipe: no GPU driver,
a virtual machine, Xvfb), Mesa has already put the system's libLLVM into the process's global symbol scope;
Triton's library then binds to those symbols and the process dies with a segmentation fault. Loaded with
``RTLD_DEEPBIND``, Triton's library looks up its own symbols first. Importing Triton before napari starts
avoids the crash too, but a plugin's code runs only once napari is up.
"""

import importlib
import importlib.util
import logging
import os
import sys

log = logging.getLogger(__name__)


def preload_triton() -> None:
    """Import Triton, if it is installed and not imported yet, binding its own symbols first (Linux only)."""
    deepbind = getattr(os, "RTLD_DEEPBIND", None)
    if deepbind is None or "triton" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | deepbind)
    try:
        importlib.import_module("triton")
    except ImportError as exc:  # PyTorch then finds no Triton either, and trains without it
        log.warning("Triton is installed but cannot be imported (%s); PyTorch will do without it", exc)
    finally:
        sys.setdlopenflags(flags)
