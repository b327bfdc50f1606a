"""napari's File > Open Sample: synthetic microdisk scenes (see ``core.sample``)."""

from .core.layers import upscaled_geometry
from .core.sample import make_scene

_SEED = 2024
_LR_SIZE = (256, 256)


def sample_scene():
    """A low-resolution (4X-like) microdisk scene, as an image layer."""
    scene = make_scene(seed=_SEED, size=_LR_SIZE)
    return [(scene.lr, {"name": "microdisk scene (LR)"}, "image")]


def sample_scene_pair():
    """The same scene at low resolution and its x4 high-resolution truth, aligned in world coordinates."""
    scene = make_scene(seed=_SEED, size=_LR_SIZE)
    hr_scale, hr_translate = upscaled_geometry((1.0, 1.0), (0.0, 0.0), scene.scale)
    return [
        (scene.lr, {"name": "microdisk scene (LR)"}, "image"),
        (scene.hr, {"name": "microdisk scene (HR)", "scale": hr_scale, "translate": hr_translate}, "image"),
    ]
