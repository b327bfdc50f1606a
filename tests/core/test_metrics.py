"""PSNR/SSIM against scikit-image, and the evaluation of upscaling methods."""

import json
import math

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_microdisk_sr.core import infer, models
from napari_microdisk_sr.core.comparison_table import COLUMNS
from napari_microdisk_sr.core.degradation import degrade
from napari_microdisk_sr.core.errors import InputError
from napari_microdisk_sr.core.io import read_csv
from napari_microdisk_sr.core.metrics import (
    EvalEvent,
    abs_error,
    evaluate,
    evaluate_all,
    model_parent,
    psnr,
    ssim,
    with_parents,
)
from napari_microdisk_sr.core.progress import StopFlag, drive
from napari_microdisk_sr.core.sample import make_scene


def _pair(dtype, shape=(40, 48, 3), seed=0):
    """A smooth reference and a noisy copy of it, in ``dtype`` (floats in [-2, 3])."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = 0.5 + 0.4 * np.sin(yy / 5.0)[..., None] * np.cos(xx / 7.0)[..., None] * np.ones(shape[2:] or 1)
    base = base.reshape(shape)
    noisy = np.clip(base + rng.normal(0, 0.05, shape), 0, 1)
    if np.dtype(dtype).kind == "f":
        return (base * 5 - 2).astype(dtype), (noisy * 5 - 2).astype(dtype), 5.0 * float(np.ptp(base))
    top = np.iinfo(dtype).max
    return np.rint(base * top).astype(dtype), np.rint(noisy * top).astype(dtype), float(top)


# --- PSNR / SSIM -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(40, 48), (40, 48, 3)])
def test_psnr_and_ssim_match_scikit_image(dtype, shape):
    ref, img, data_range = _pair(dtype, shape)
    channel_axis = -1 if len(shape) == 3 else None
    # scikit-image works in float32 for float32 images, hence the tolerances.
    assert psnr(ref, img) == pytest.approx(peak_signal_noise_ratio(ref, img, data_range=data_range), rel=1e-7)
    expected = structural_similarity(
        ref,
        img,
        data_range=data_range,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=channel_axis,
    )
    assert ssim(ref, img) == pytest.approx(expected, abs=1e-6)
    # An explicit range is used as given.
    assert psnr(ref, img, data_range=2 * data_range) == pytest.approx(psnr(ref, img) + 20 * math.log10(2))


def test_psnr_known_values():
    ref = np.zeros((16, 16), np.uint8)
    assert psnr(ref, ref + 1) == pytest.approx(20 * math.log10(255))
    assert psnr(ref.astype(np.uint16), (ref + 1).astype(np.uint16)) == pytest.approx(20 * math.log10(65535))
    assert psnr(ref, ref) == math.inf
    assert ssim(ref, ref) == pytest.approx(1.0)


def test_abs_error_is_in_units_of_the_range_and_averages_channels():
    ref = np.zeros((4, 4, 3), np.uint8)
    img = ref.copy()
    img[0, 0] = (255, 0, 0)
    img[1, 1] = (51, 51, 51)
    error = abs_error(ref, img)
    assert error.shape == (4, 4)
    assert error.dtype == np.float32
    assert error[0, 0] == pytest.approx(1 / 3)
    assert error[1, 1] == pytest.approx(0.2)
    assert error.sum() == pytest.approx(1 / 3 + 0.2)


def test_metrics_reject_inputs_they_cannot_score():
    ref = np.zeros((16, 16), np.uint8)
    with pytest.raises(InputError, match="shape"):
        psnr(ref, np.zeros((16, 17), np.uint8))
    with pytest.raises(InputError, match="give data_range"):
        psnr(ref, ref.astype(np.float32))
    with pytest.raises(InputError, match="constant"):
        psnr(np.ones((16, 16), np.float32), np.zeros((16, 16), np.float32))
    with pytest.raises(InputError, match="NaN"):
        psnr(np.zeros((16, 16)), np.full((16, 16), np.nan), data_range=1.0)
    with pytest.raises(InputError, match="11x11"):
        ssim(ref[:8], ref[:8])
    # Mixed dtypes are fine with an explicit range.
    assert psnr(ref, ref.astype(np.float32), data_range=255) == math.inf


# --- evaluate -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random x4 SRVGGNetCompact saved as a model file."""
    spec = models.ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 4})
    torch.manual_seed(0)
    return str(models.save_model(spec.build(), spec, tmp_path_factory.mktemp("model") / "tiny.pth"))


def test_evaluate_scores_bicubic_and_a_model_on_given_lr_images(tiny_model):
    scenes = [make_scene(seed=1, size=(16, 16)), make_scene(seed=2, size=(16, 20), rgb=True)]
    events = []
    job = evaluate(
        [s.hr for s in scenes],
        ["bicubic", tiny_model],
        lr_images=[s.lr for s in scenes],
        names=["gray", "rgb"],
        device="cpu",
        error_maps=True,
        keep_outputs=True,
    )
    result = drive(job, events.append)
    assert all(isinstance(e, EvalEvent) for e in events)
    assert events[-1].done == events[-1].total == 4
    assert [(r["image"], r["method"]) for r in result.rows] == [
        (image, method) for image in ("gray", "rgb", "mean") for method in ("bicubic", tiny_model)
    ]
    rows = {(r["image"], r["method"]): r for r in result.rows}
    loaded = models.load_model(tiny_model)
    for scene, name in zip(scenes, ("gray", "rgb"), strict=True):
        bicubic = cv2.resize(
            scene.lr, (scene.lr.shape[1] * 4, scene.lr.shape[0] * 4), interpolation=cv2.INTER_CUBIC
        )
        model_out = infer.upscale_array(scene.lr, loaded, device="cpu")
        for method, output in (("bicubic", bicubic), (tiny_model, model_out)):
            row = rows[name, method]
            assert row["psnr"] == pytest.approx(
                peak_signal_noise_ratio(scene.hr, output, data_range=255), abs=1e-4
            )
            assert row["ssim"] == pytest.approx(ssim(scene.hr, output), abs=1e-4)
            np.testing.assert_allclose(
                result.error_maps[name, method], abs_error(scene.hr, output), atol=1e-6
            )
            assert result.outputs[name, method].dtype == output.dtype
            np.testing.assert_allclose(result.outputs[name, method], output, atol=1)
        model_row = rows[name, tiny_model]
        gain = model_row["psnr"] - rows[name, "bicubic"]["psnr"]
        assert model_row["gain_vs_bicubic_db"] == pytest.approx(gain)
        assert model_row["gain_vs_bicubic_pct"] == pytest.approx(100 * gain / rows[name, "bicubic"]["psnr"])
        assert rows[name, "bicubic"]["gain_vs_bicubic_db"] == 0.0
        assert model_row["gain_vs_pretrained_db"] is None  # the pretrained model was not evaluated
    mean = rows["mean", tiny_model]
    assert mean["psnr"] == pytest.approx(
        (rows["gray", tiny_model]["psnr"] + rows["rgb", tiny_model]["psnr"]) / 2
    )
    assert result.degradation is None
    assert result.models[tiny_model]["sha256"] == loaded.sha256


def test_mean_rows_come_last_and_only_for_more_than_one_image():
    scenes = [make_scene(seed=seed, size=(16, 16)) for seed in (1, 2)]
    one = drive(evaluate([scenes[0].hr], ["bicubic"], names=["a"], device="cpu"))
    assert [(r["image"], r["method"]) for r in one.rows] == [("a", "bicubic")]  # no mean repeating it
    two = drive(evaluate([s.hr for s in scenes], ["bicubic"], names=["a", "b"], device="cpu"))
    assert [r["image"] for r in two.rows] == ["a", "b", "mean"]


def test_a_float_pair_is_scored_on_one_value_range_and_mixed_dtypes_are_refused():
    scene = make_scene(seed=4, size=(24, 24))
    scores = {}
    for kind, scale in (("uint8", None), ("float", 255.0)):
        hr, lr = (scene.hr, scene.lr) if scale is None else (scene.hr / scale, scene.lr / scale)
        result = drive(
            evaluate(
                [hr.astype(np.float32) if scale else hr],
                ["bicubic"],
                lr_images=[lr.astype(np.float32) if scale else lr],
                device="cpu",
                intensity="range",
            )
        )
        scores[kind] = result.rows[0]["psnr"]
    # In range mode the float pair's data range is its own span of values (each image by its own range:
    # 12 dB lower).
    span = (max(scene.hr.max(), scene.lr.max()) - min(scene.hr.min(), scene.lr.min())) / 255.0
    assert scores["float"] == pytest.approx(scores["uint8"] + 20 * math.log10(span), abs=0.1)
    with pytest.raises(InputError, match="HR is uint8 but LR is float32; give both in one dtype"):
        drive(evaluate([scene.hr], ["bicubic"], lr_images=[scene.lr.astype(np.float32)], device="cpu"))


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.uint32])
def test_signed_and_wide_integer_pairs_are_scored_like_floats_of_the_same_values(dtype):
    scene = make_scene(seed=4, size=(24, 24))
    scores = {}
    for kind in (dtype, np.float64):
        hr, lr = scene.hr.astype(kind), scene.lr.astype(kind)
        result = drive(
            evaluate([hr], ["bicubic"], lr_images=[lr], device="cpu", keep_outputs=True, intensity="range")
        )
        scores[kind] = result.rows[0]["psnr"], result.rows[0]["ssim"]
        output = result.outputs["image1", "bicubic"]
        assert output.dtype == kind
        assert min(hr.min(), lr.min()) <= output.min() <= output.max() <= max(hr.max(), lr.max())
    assert scores[dtype] == pytest.approx(scores[np.float64], abs=0.05)  # integers: outputs rounded
    ref, img, _ = _pair(np.uint8)
    assert psnr(ref.astype(dtype), img.astype(dtype)) == psnr(ref.astype(np.float64), img.astype(np.float64))
    assert ssim(ref.astype(dtype), img.astype(dtype)) == ssim(ref.astype(np.float64), img.astype(np.float64))


def test_a_bit_depth_scores_12_bit_data_against_its_own_range(tmp_path):
    scene = make_scene(seed=4, size=(24, 24))
    hr, lr = scene.hr.astype(np.uint16) * 16, scene.lr.astype(np.uint16) * 16  # 12-bit data in uint16
    twelve = "bits:12"
    deep = drive(
        evaluate([hr], ["bicubic"], lr_images=[lr], device="cpu", intensity=twelve, keep_outputs=True)
    )
    output = deep.outputs["image1", "bicubic"]
    assert output.max() <= 4095
    assert deep.rows[0]["psnr"] == pytest.approx(
        peak_signal_noise_ratio(hr, output, data_range=4095), abs=1e-4
    )
    full = drive(evaluate([hr], ["bicubic"], lr_images=[lr], device="cpu", intensity="range"))
    inflated = full.rows[0]["psnr"] - deep.rows[0]["psnr"]
    assert inflated == pytest.approx(20 * math.log10(65535 / 4095), abs=0.05)  # 24 dB for nothing
    assert deep.intensity == twelve
    assert json.loads(deep.to_json(tmp_path / "m.json").read_text())["intensity"] == twelve
    lr[0, 0] = 4096
    with pytest.raises(InputError, match="LR image image1: values reach 4096"):
        evaluate([hr], ["bicubic"], lr_images=[lr], device="cpu", intensity=twelve)


def test_by_default_16_bit_pairs_are_scored_by_the_hrs_percentiles_whatever_their_exposure():
    """One map, the HR's percentiles, for HR, LR and outputs: a pair at twice the exposure scores the same,
    and the score no longer depends on how much of the uint16 range the camera used."""
    scene = make_scene(seed=4, size=(24, 24))
    scores = []
    for gain in (1, 2):
        hr, lr = scene.hr.astype(np.uint16) * gain + 100, scene.lr.astype(np.uint16) * gain + 100
        result = drive(evaluate([hr], ["bicubic"], lr_images=[lr], device="cpu", keep_outputs=True))
        assert result.intensity == "auto"
        low, high = np.percentile(hr, [1, 99.8])
        expected = peak_signal_noise_ratio(
            (hr - low) / (high - low),
            (result.outputs["image1", "bicubic"] - low) / (high - low),
            data_range=1,
        )
        assert result.rows[0]["psnr"] == pytest.approx(expected, abs=1e-3)
        scores.append(result.rows[0]["psnr"])
    assert scores[1] == pytest.approx(scores[0], abs=0.05)


@pytest.mark.parametrize("degradation", ["bicubic", "realistic"])
def test_evaluate_makes_lr_images_by_the_degradation(degradation):
    hr = make_scene(seed=3, size=(17, 18)).hr[:70, :66]  # cropped to 68 x 64 for x4
    result = evaluate_all([hr], ["bicubic"], degradation=degradation, error_maps=True, seed=5)
    assert result.error_maps["image1", "bicubic"].shape == (68, 64)
    assert result.outputs == {}  # kept only when asked for
    assert result.degradation == degradation
    cropped = hr[:68, :64]
    rng = np.random.default_rng(np.random.SeedSequence(5, spawn_key=(0,)))
    lr = np.rint(np.clip(degrade(cropped / np.float32(255), kind=degradation, rng=rng), 0, 1) * 255).astype(
        np.uint8
    )
    up = cv2.resize(lr, (64, 68), interpolation=cv2.INTER_CUBIC)
    assert result.rows[0]["psnr"] == pytest.approx(psnr(cropped, up), abs=1e-3)
    again = evaluate_all([hr], ["bicubic"], degradation=degradation, seed=5)
    assert again.rows[0]["psnr"] == result.rows[0]["psnr"]


def test_identical_images_give_infinite_psnr_in_rows_csv_json_and_table(tmp_path):
    hr = np.full((48, 48), 50, np.uint8)
    result = evaluate_all([hr], ["bicubic"], lr_images=[np.full((12, 12), 50, np.uint8)])
    row = result.rows[0]
    assert row["psnr"] == math.inf
    assert row["ssim"] == pytest.approx(1.0)
    assert row["gain_vs_bicubic_db"] is None  # inf - inf is not defined
    csv_rows = read_csv(result.to_csv(tmp_path / "m.csv"))
    assert list(csv_rows[0]) == list(COLUMNS)
    assert csv_rows[0]["psnr"] == "inf"
    assert csv_rows[0]["gain_vs_bicubic_db"] == ""
    payload = json.loads(result.to_json(tmp_path / "m.json").read_text())  # strict JSON: no Infinity
    assert payload["rows"][0]["psnr"] == "inf"
    assert "inf" in result.table().splitlines()[2]


def test_a_table_is_saved_as_csv_and_json_under_one_free_name(tmp_path):
    result = evaluate_all([np.full((48, 48), 50, np.uint8)], ["bicubic"])
    (tmp_path / "m-1.json").write_text("{}")  # a lone JSON: its name is not taken for the CSV either
    saved = [result.save(tmp_path / "m.csv") for _ in range(2)]
    assert saved == [tmp_path / "m.csv", tmp_path / "m-2.csv"]
    assert (
        json.loads((tmp_path / "m-2.json").read_text())["rows"]
        == json.loads((tmp_path / "m.json").read_text())["rows"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m-1.json",
        "m-2.csv",
        "m-2.json",
        "m.csv",
        "m.json",
    ]


def test_evaluate_stops_when_asked(tiny_model):
    stop = StopFlag()
    stop.set()
    assert evaluate_all([make_scene(seed=1, size=(16, 16)).hr], ["bicubic", tiny_model], stop=stop) is None


def test_evaluate_rejects_bad_input(tiny_model, tmp_path):
    hr = [np.zeros((64, 64), np.uint8)]
    with pytest.raises(InputError, match="unknown method 'nope'"):
        evaluate(hr, ["bicubic", "nope"])
    with pytest.raises(InputError, match=r"missing\.pth does not exist"):
        evaluate(hr, [str(tmp_path / "missing.pth")])
    with pytest.raises(InputError, match="more than once"):
        evaluate(hr, ["bicubic", "bicubic"])
    with pytest.raises(InputError, match="1 HR image"):
        evaluate(hr, ["bicubic"], lr_images=[np.zeros((16, 16), np.uint8)] * 2)
    with pytest.raises(InputError, match="exactly 4x"):
        evaluate(hr, ["bicubic"], lr_images=[np.zeros((15, 16), np.uint8)])
    with pytest.raises(InputError, match="exactly 4x"):
        evaluate(hr, ["bicubic"], lr_images=[np.zeros((16, 16, 3), np.uint8)])
    with pytest.raises(InputError, match=r"2 name\(s\) for 1 image"):
        evaluate(hr, ["bicubic"], names=["a", "b"])
    with pytest.raises(InputError, match="stacks"):
        evaluate([np.zeros((2, 64, 64), np.uint8)], ["bicubic"])
    with pytest.raises(InputError, match="degradation"):
        evaluate(hr, ["bicubic"], degradation="jpeg")


def test_evaluate_with_the_pretrained_model(tiny_model):
    """The real x4plus on one tiny image: its row, and the other methods' gains over it."""
    scene = make_scene(seed=4, size=(16, 16), rgb=True)
    result = evaluate_all([scene.hr], ["bicubic", "realesrgan-x4plus", tiny_model], lr_images=[scene.lr])
    rows = {r["method"]: r for r in result.rows if r["image"] == "image1"}
    pretrained = rows["realesrgan-x4plus"]["psnr"]
    assert math.isfinite(pretrained)
    assert rows["realesrgan-x4plus"]["gain_vs_pretrained_db"] == 0.0
    assert rows[tiny_model]["gain_vs_pretrained_db"] == pytest.approx(rows[tiny_model]["psnr"] - pretrained)
    assert rows["bicubic"]["gain_vs_pretrained_pct"] == pytest.approx(
        100 * (rows["bicubic"]["psnr"] - pretrained) / pretrained
    )
    assert len(result.models["realesrgan-x4plus"]["sha256"]) == 64


def test_a_fine_tuned_model_gains_over_its_own_parent_which_is_evaluated_too(tiny_model, tmp_path):
    """A compact run is compared with the compact model it was fine-tuned from, not with x4plus."""
    parent = models.load_model(tiny_model)
    spec = models.ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 4})
    torch.manual_seed(1)
    record = {"name": parent.name, "source": parent.source, "sha256": parent.sha256}
    run = str(
        models.save_model(spec.build(), spec, tmp_path / "model.pth", info={"provenance": {"parent": record}})
    )
    assert model_parent(run) == record
    assert model_parent(tiny_model) is None
    assert model_parent("realesrgan-x4plus") is None
    methods = with_parents(["bicubic", run])
    assert methods == ("bicubic", run, tiny_model)
    assert with_parents(methods) == methods  # a parent already there is not added again
    scene = make_scene(seed=4, size=(16, 16))
    result = evaluate_all([scene.hr], list(methods), lr_images=[scene.lr])
    rows = {r["method"]: r for r in result.rows if r["image"] == "image1"}
    assert rows[run]["gain_vs_pretrained_db"] == pytest.approx(rows[run]["psnr"] - rows[tiny_model]["psnr"])
    assert rows[tiny_model]["gain_vs_pretrained_db"] is None  # x4plus was not evaluated
    assert result.pretrained_references == {
        "bicubic": "realesrgan-x4plus",
        run: tiny_model,
        tiny_model: "realesrgan-x4plus",
    }
    alone = evaluate_all([scene.hr], [run], lr_images=[scene.lr])  # its parent not evaluated: no gain
    assert alone.rows[0]["gain_vs_pretrained_db"] is None
