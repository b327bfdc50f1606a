"""All four dock widgets together fit a 1366x768 laptop screen: each dock scrolls, and no row is cut off."""

from qtpy.QtWidgets import QScrollArea

PLUGIN = "napari-microdisk-sr"
WIDGETS = ("Select & crop microdisks", "Fine-tune", "Super-resolve", "Compare & measure")
LAPTOP = (1366, 768)


def test_four_docks_fit_a_laptop_screen_and_scroll_to_every_row(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    widgets = [viewer.window.add_plugin_dock_widget(PLUGIN, name)[1] for name in WIDGETS]
    window = viewer.window._qt_window
    window.resize(*LAPTOP)
    qtbot.wait(100)

    hint = window.minimumSizeHint()
    assert hint.width() <= LAPTOP[0]
    assert hint.height() <= LAPTOP[1]
    assert (window.width(), window.height()) == LAPTOP  # before, four docks made the window 2,400 px tall
    for widget in widgets:
        area = widget.native.layout().itemAt(0).widget()
        assert isinstance(area, QScrollArea)
        rows = area.widget()
        assert area.height() >= min(rows.height(), 8 * area.fontMetrics().height())  # a few rows show
        assert rows.height() >= rows.minimumSizeHint().height()  # ... and squeezes no row
        assert rows.width() >= rows.minimumSizeHint().width()  # no row is cut at the side either
        last = rows.layout().itemAt(len(widget) - 1).widget()  # the status line, table or plot
        area.ensureWidgetVisible(last)
        qtbot.wait(10)
        assert not last.visibleRegion().isEmpty()
