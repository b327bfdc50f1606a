"""Packaging promises: the manifest validates, the console script exists, and the core never loads Qt."""

import json
import subprocess
import sys
from pathlib import Path

from npe2 import PluginManifest


def test_manifest_validates_through_the_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-microdisk-sr"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = PluginManifest.from_distribution("napari-microdisk-sr")
    assert manifest.name == "napari-microdisk-sr"


def test_importing_the_core_and_cli_loads_no_gui_toolkit():
    code = (
        "import json, sys\n"
        "import napari_microdisk_sr, napari_microdisk_sr.cli\n"
        "import napari_microdisk_sr.core.io, napari_microdisk_sr.core.device\n"
        "import pkgutil, importlib, napari_microdisk_sr.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__):\n"
        "    importlib.import_module('napari_microdisk_sr.core.' + m.name)\n"
        "napari_microdisk_sr.cli.build_parser()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'magicgui', 'superqt', 'vispy'})\n"
        "print(json.dumps(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_console_script_reports_its_version():
    script = Path(sys.executable).with_name("microdisk-sr")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("microdisk-sr ")
