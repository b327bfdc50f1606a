"""The README's main job: napari with the sample scene and the four widgets docked.

Without a usable display (a server, CI, an SSH session) it runs the headless demo instead
(``microdisk-sr demo``: the study's whole workflow on the sample data) and says so.

Usage: ``python -m napari_microdisk_sr.launch [--headless] [demo options...]``
"""

import os
import subprocess
import sys
from collections.abc import Sequence

PLUGIN = "napari-microdisk-sr"
WIDGETS = ("Select & crop microdisks", "Fine-tune", "Super-resolve", "Compare & measure")


def why_no_window() -> "str | None":
    """None when a Qt application can open a window here, else why not.

    Checked in a subprocess, because Qt aborts the whole process when it finds no display.
    """
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return "no display was found"
    probe = "from qtpy.QtWidgets import QApplication; QApplication([])"
    try:
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Qt could not be started ({exc})"
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        return f"Qt could not open a window ({lines[-1] if lines else f'exit status {result.returncode}'})"
    return None


def open_viewer():
    """A napari viewer holding the sample scene pair, with the plugin's four widgets docked (tabbed)."""
    import napari

    viewer = napari.Viewer(title="napari-microdisk-sr")
    viewer.open_sample(PLUGIN, "microdisk_scene_pair")
    docks = [viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)[0] for name in WIDGETS]
    docks[0].raise_()
    return viewer


def main(argv: "Sequence[str] | None" = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    headless = "--headless" in args
    if headless:
        args.remove("--headless")
    reason = "--headless was given" if headless else why_no_window()
    if reason is None:
        import napari

        open_viewer()
        print("napari is open with the sample microdisk scene and the four Microdisk SR widgets.", flush=True)
        napari.run()
        return 0
    print(f"{reason}: running the headless demo (microdisk-sr demo) instead of napari.", flush=True)
    from .cli import main as cli_main

    return cli_main(["demo", *args])


if __name__ == "__main__":
    sys.exit(main())
