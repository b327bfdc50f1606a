"""Where runs and metric tables go: the chosen folder, beside the crops, or beside the image; never over."""

import pytest

from napari_microdisk_sr.core.errors import OutputError
from napari_microdisk_sr.core.outputs import (
    free_table_path,
    metrics_path_for,
    run_dir_for,
    safe_name,
    unique_name,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("microdisk scene (LR)", "microdisk_scene_LR"),
        ("field.tif", "field_tif"),
        ("a/b\\c", "a_b_c"),
        ("  ", "data"),
        ("disks-2_x4", "disks-2_x4"),
    ],
)
def test_safe_name_keeps_portable_characters_only(text, expected):
    assert safe_name(text) == expected


def test_run_dir_goes_to_the_chosen_folder_first(tmp_path):
    chosen = tmp_path / "chosen"
    run = run_dir_for(
        "disks", output_dir=chosen, crops_folder=tmp_path / "crops", source_path=tmp_path / "a.tif"
    )
    assert run == chosen / "finetune_disks"


def test_run_dir_goes_beside_the_crops_folder(tmp_path):
    crops = tmp_path / "field_microdisk_sr" / "crops"
    assert run_dir_for("crops", crops_folder=crops) == tmp_path / "field_microdisk_sr" / "finetune_crops"


def test_run_dir_goes_into_the_images_output_folder(tmp_path):
    run = run_dir_for("field (LR)", source_path=tmp_path / "field.tif")
    assert run == tmp_path / "field_microdisk_sr" / "finetune_field_LR"


def test_run_dir_never_reuses_an_existing_folder(tmp_path):
    (tmp_path / "finetune_disks").mkdir()
    (tmp_path / "finetune_disks-1").mkdir()
    assert run_dir_for("disks", output_dir=tmp_path) == tmp_path / "finetune_disks-2"
    assert (tmp_path / "finetune_disks-2").is_dir()  # claimed: a second session gets the next name
    assert run_dir_for("disks", output_dir=tmp_path) == tmp_path / "finetune_disks-3"


def test_data_from_no_file_asks_for_a_folder():
    with pytest.raises(OutputError, match="choose an output folder"):
        run_dir_for("sample")
    with pytest.raises(OutputError, match="choose an output folder"):
        metrics_path_for()


def test_metrics_table_goes_into_the_crops_folder_or_beside_the_image(tmp_path):
    assert metrics_path_for(crops_folder=tmp_path / "crops") == tmp_path / "crops" / "metrics.csv"
    assert metrics_path_for(source_path=tmp_path / "hr.tif") == tmp_path / "hr_microdisk_sr" / "metrics.csv"
    assert metrics_path_for(output_dir=tmp_path, crops_folder=tmp_path / "crops") == tmp_path / "metrics.csv"


def test_metrics_table_skips_names_whose_csv_or_json_exists(tmp_path):
    (tmp_path / "metrics.csv").touch()
    (tmp_path / "metrics-1.json").touch()
    assert metrics_path_for(output_dir=tmp_path) == tmp_path / "metrics-2.csv"


def test_a_chosen_table_name_skips_names_whose_csv_or_json_exists(tmp_path):
    assert free_table_path(tmp_path / "scores.csv") == tmp_path / "scores.csv"
    (tmp_path / "scores.json").touch()
    assert free_table_path(tmp_path / "scores.csv") == tmp_path / "scores-1.csv"


def test_unique_name_numbers_a_taken_name():
    assert unique_name("run", set()) == "run"
    assert unique_name("run", {"run", "run 2"}) == "run 3"
