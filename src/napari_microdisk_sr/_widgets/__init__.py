"""The napari dock widgets: the only place the package imports Qt, napari or magicgui.

napari imports each widget module through the manifest (``napari.yaml``); importing the package itself
loads none of them.
"""
