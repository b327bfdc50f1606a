"""The headless core: pure Python, numpy and torch. Never imports Qt, napari or magicgui."""
