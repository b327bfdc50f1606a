import numpy as np
import pytest

from napari_microdisk_sr.core.layers import upscaled_geometry


@pytest.mark.parametrize("factor", [2, 4])
def test_pixel_centres_align_in_world_coordinates(factor):
    scale, translate = (0.65, 0.65), (10.0, -3.0)
    new_scale, new_translate = upscaled_geometry(scale, translate, factor)
    assert new_scale == pytest.approx((0.65 / factor, 0.65 / factor))
    # The mean of the output pixel centres covering input pixel i is that pixel's centre.
    for i in (0, 5):
        out_centres = [new_translate[0] + (i * factor + k) * new_scale[0] for k in range(factor)]
        assert np.mean(out_centres) == pytest.approx(translate[0] + i * scale[0])
    # The output's outer edge coincides with the input's outer edge.
    assert new_translate[1] - new_scale[1] / 2 == pytest.approx(translate[1] - scale[1] / 2)


def test_leading_axes_keep_their_geometry():
    new_scale, new_translate = upscaled_geometry((2.0, 1.0, 1.0), (5.0, 0.0, 0.0), 4)
    assert new_scale == (2.0, 0.25, 0.25)
    assert new_translate == (5.0, -0.375, -0.375)
