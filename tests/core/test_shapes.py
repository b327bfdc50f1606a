"""Disk outlines and the pixel boxes of outlines."""

import numpy as np
import pytest

from napari_microdisk_sr.core.detect import Disk, disk_box
from napari_microdisk_sr.core.errors import InputError
from napari_microdisk_sr.core.shapes import disk_outline, outline_box


def test_disk_outline_is_the_bounding_square():
    outline = disk_outline(Disk(10.0, 20.0, 3.5))
    np.testing.assert_array_equal(outline, [[6.5, 16.5], [6.5, 23.5], [13.5, 23.5], [13.5, 16.5]])


def test_box_of_a_disk_outline_covers_exactly_the_pixels_it_touches():
    disk = Disk(10.3, 20.0, 4.6)
    y0, x0, y1, x1 = outline_box(disk_outline(disk), (64, 64))
    # pixel i spans [i - 0.5, i + 0.5): the disk spans rows 5.7..14.9 and columns 15.4..24.6
    assert (y0, x0, y1, x1) == (6, 15, 16, 26)
    yy, xx = np.mgrid[:64, :64]
    inside = np.hypot(yy - disk.cy, xx - disk.cx) <= disk.r
    rows, cols = np.nonzero(inside)
    assert rows.min() >= y0
    assert rows.max() < y1
    assert cols.min() >= x0
    assert cols.max() < x1


def test_box_of_any_outline_is_its_bounding_box():
    triangle = [[2.0, 3.0], [9.0, 4.0], [5.0, 12.0]]
    assert outline_box(triangle, (20, 20, 3)) == (2, 3, 10, 13)


def test_box_is_clipped_to_the_image_and_none_outside_it():
    assert outline_box([[-5.0, -5.0], [3.0, 4.0]], (10, 10)) == (0, 0, 4, 5)
    assert outline_box([[5.0, 5.0], [30.0, 30.0]], (10, 10)) == (5, 5, 10, 10)
    assert outline_box([[-9.0, 2.0], [-1.0, 6.0]], (10, 10)) is None
    assert outline_box([[2.0, 10.5], [4.0, 14.0]], (10, 10)) is None


def test_margin_grows_the_box_by_a_fraction_of_its_half_size_like_disk_box():
    disk = Disk(20.0, 30.0, 8.0)
    assert outline_box(disk_outline(disk), (64, 64), margin=0.25) == disk_box(disk, (64, 64), margin=0.25)
    assert outline_box([[10.0, 10.0], [14.0, 30.0]], (64, 64), margin=0.5) == (9, 5, 16, 36)


def test_skip_border_drops_outlines_that_cross_the_border_before_the_margin():
    assert outline_box([[0.0, 5.0], [9.0, 9.5]], (10, 10), skip_border=True) == (0, 5, 10, 10)
    assert outline_box([[-0.6, 5.0], [4.0, 8.0]], (10, 10), skip_border=True) is None
    assert outline_box([[2.0, 5.0], [4.0, 9.6]], (10, 10), skip_border=True) is None
    assert outline_box([[2.0, 5.0], [4.0, 9.0]], (10, 10), margin=1.0, skip_border=True) == (1, 3, 6, 10)


@pytest.mark.parametrize("vertices", [[], [[1.0, 2.0, 3.0]], [[np.nan, 1.0], [2.0, 3.0]]])
def test_bad_outlines_are_refused(vertices):
    with pytest.raises(InputError, match="outline"):
        outline_box(vertices, (10, 10))


def test_negative_margin_is_refused():
    with pytest.raises(InputError, match="margin"):
        outline_box([[1.0, 1.0], [3.0, 3.0]], (10, 10), margin=-0.1)
