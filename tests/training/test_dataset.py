"""The garment data format: the generator writes it exactly, bad inputs fail before training."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from training.dataset import (
    CATEGORIES,
    COLOURS,
    DATA_COLUMNS,
    TAGS,
    data_source,
    dataset_generate,
    dataset_load,
    datasets_load,
    labels_read,
)
from training.exceptions import DatasetError


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return dataset_generate(
        output_dir=tmp_path_factory.mktemp("small"), count=60, test_count=5, image_size=64, seed=1
    )


def test_the_generator_writes_the_marketplace_format(small_dataset):
    data = pq.read_table(small_dataset.data_path)
    assert data.column_names == ["uuid", "cc3", "color1", "polka dot", "floral", "checker"]
    assert data.num_rows == 60
    assert set(data.column("cc3").to_pylist()) <= set(CATEGORIES)
    assert set(data.column("color1").to_pylist()) <= set(COLOURS)
    assert len(COLOURS) == 28
    for tag in TAGS:
        assert set(data.column(tag).to_pylist()) <= {0, 1}
    assert pq.read_table(small_dataset.test_path).column_names == ["uuid"]
    for uuid in data.column("uuid").to_pylist()[:5]:
        with Image.open(small_dataset.images_dir / f"{uuid}.jpg") as image:
            assert image.format == "JPEG"
    labels = dataset_load(data_path=small_dataset.data_path, images_dir=small_dataset.images_dir)
    assert len(labels) == 60
    # Imbalanced, several tags or none, as a marketplace's listings are.
    counts = [int((labels.categories == i).sum()) for i in range(len(CATEGORIES))]
    assert max(counts) > 2 * min(counts)
    per_item = labels.tags.sum(axis=1)
    assert (per_item == 0).any() and (per_item >= 2).any()


def test_the_generator_is_deterministic(tmp_path):
    one = dataset_generate(output_dir=tmp_path / "a", count=5, image_size=48, seed=7)
    two = dataset_generate(output_dir=tmp_path / "b", count=5, image_size=48, seed=7)
    assert pq.read_table(one.data_path).equals(pq.read_table(two.data_path))


def _write(path, columns: dict):
    pq.write_table(pa.table(columns), path)
    return path


def _good_columns(uuids):
    return {
        "uuid": uuids,
        "cc3": ["SHIRTS"] * len(uuids),
        "color1": ["BLACK"] * len(uuids),
        **{tag: [0] * len(uuids) for tag in TAGS},
    }


def test_missing_columns_are_named(tmp_path):
    columns = _good_columns(["a", "b"])
    columns["polka_dot"] = columns.pop("polka dot")
    del columns["checker"]
    with pytest.raises(DatasetError, match=r"lacks the column\(s\) 'polka dot', 'checker'") as err:
        labels_read(path=_write(tmp_path / "data.parquet", columns))
    assert "with a space" in str(err.value)


def test_unknown_categories_and_bad_tags_are_named(tmp_path):
    columns = _good_columns(["a", "b", "c"])
    columns["cc3"] = ["SHIRTS", "JEANS", "HATS"]
    with pytest.raises(DatasetError, match="unknown categories in 'cc3': HATS, JEANS"):
        labels_read(path=_write(tmp_path / "data.parquet", columns))
    columns = _good_columns(["a", "b"])
    columns["floral"] = [0, 2]
    with pytest.raises(DatasetError, match="'floral' must be 0 or 1; it is not for b"):
        labels_read(path=_write(tmp_path / "data.parquet", columns))
    columns = _good_columns(["a", "a"])
    with pytest.raises(DatasetError, match="repeats the uuids a"):
        labels_read(path=_write(tmp_path / "data.parquet", columns))
    columns = _good_columns(["../etc/passwd"])
    with pytest.raises(DatasetError, match="cannot name an image file"):
        labels_read(path=_write(tmp_path / "data.parquet", columns))


def test_training_refuses_bad_data_before_it_starts(tmp_path, small_dataset):
    uuids = pq.read_table(small_dataset.data_path).column("uuid").to_pylist()
    missing = ["0000-missing-1", "0000-missing-2"]
    data = _write(tmp_path / "data.parquet", _good_columns(uuids[:3] + missing))
    run_dir = tmp_path / "run"
    arguments = ["--data", str(data), "--images", str(small_dataset.images_dir)]
    with pytest.raises(CommandError) as err:
        call_command("train_garment_model", *arguments, "--run-dir", str(run_dir))
    assert "2 of 5 images are missing" in str(err.value)
    assert "uuids: 0000-missing-1, 0000-missing-2" in str(err.value)
    assert not (run_dir / "state.json").exists()  # nothing started

    bad = _good_columns(uuids[:2])
    bad["cc3"] = ["SHIRTS", "SOCKS"]
    data = _write(tmp_path / "bad.parquet", bad)
    with pytest.raises(CommandError, match="unknown categories in 'cc3': SOCKS"):
        call_command(
            "train_garment_model",
            "--data", str(data),
            "--images", str(small_dataset.images_dir),
            "--run-dir", str(run_dir),
        )  # fmt: skip
    columns = set(DATA_COLUMNS)
    assert columns == {"uuid", "cc3", "color1", "polka dot", "floral", "checker"}


def test_several_data_sets_load_as_one_in_order(small_dataset, tmp_path):
    other = dataset_generate(output_dir=tmp_path / "other", count=7, image_size=40, seed=2)
    (other.root / "labels.json").write_text(json.dumps({"categories": CATEGORIES, "tags": TAGS}))
    # A folder, or a data.parquet with its images named (the command's two forms).
    sources = [
        data_source(data=small_dataset.root),
        data_source(data=other.data_path, images=other.images_dir),
    ]
    labels = datasets_load(sources=sources)
    first = dataset_load(data_path=small_dataset.data_path, images_dir=small_dataset.images_dir)
    second = dataset_load(data_path=other.data_path, images_dir=other.images_dir)
    assert labels.uuids == first.uuids + second.uuids
    assert labels.categories.tolist() == first.categories.tolist() + second.categories.tolist()
    assert labels.tags.tolist() == first.tags.tolist() + second.tags.tolist()
    assert labels.image_paths == [
        *(small_dataset.images_dir / f"{uuid}.jpg" for uuid in first.uuids),
        *(other.images_dir / f"{uuid}.jpg" for uuid in second.uuids),
    ]


def test_data_sets_that_disagree_are_refused_before_training(small_dataset, tmp_path):
    run_dir = tmp_path / "run"
    twice = ["--data", str(small_dataset.root), "--data", str(small_dataset.data_path)]
    with pytest.raises(CommandError, match="60 uuid\\(s\\) appear in more than one data set"):
        call_command("train_garment_model", *twice, "--run-dir", str(run_dir))
    with pytest.raises(CommandError, match="2 --data but 1 --images"):
        call_command(
            "train_garment_model", *twice, "--images", str(small_dataset.images_dir),
            "--run-dir", str(run_dir),
        )  # fmt: skip
    other = dataset_generate(output_dir=tmp_path / "other", count=4, image_size=40, seed=2)
    declared = {"categories": [*CATEGORIES, "JEANS"], "tags": TAGS}
    (other.root / "labels.json").write_text(json.dumps(declared))
    with pytest.raises(CommandError) as refused:
        call_command(
            "train_garment_model", "--data", str(small_dataset.root), "--data", str(other.root),
            "--run-dir", str(run_dir),
        )  # fmt: skip
    assert f"The data set {other.data_path} has other labels" in str(refused.value)
    assert "SHIRTS, TANK_TOPS, JEANS and tags polka dot, floral, checker" in str(refused.value)
    assert not run_dir.exists()
