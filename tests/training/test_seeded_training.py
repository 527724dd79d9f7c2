"""A seeded training is reproducible on one machine: the same seed gives the same weights and
byte-equal prediction files, whether it is given to model_train or to the command; another seed
gives other weights."""

import io
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from training.dataset import GeneratedDataset, dataset_generate, dataset_load
from training.evaluation import PREDICTIONS_FILE, SCORES_FILE, validation_predictions_write
from training.services import TrainingConfig, model_train

pytestmark = pytest.mark.slow

# A random backbone at 32 pixels: each training takes a few seconds, and both phases run (the
# fine-tuning trains backbone blocks too).
SEEDED = TrainingConfig(
    input_size=32,
    batch_size=16,
    epochs=2,
    fine_tune_epochs=1,
    learning_rate=3e-3,
    patience=10,
    weights="random",
    seed=7,
)


@dataclass(frozen=True)
class Run:
    weights: list[np.ndarray]
    evaluation: Path  # predictions.parquet and scores.parquet, as the evaluation writes them


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> GeneratedDataset:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return dataset_generate(
        output_dir=tmp_path_factory.mktemp("seeded-data"), count=48, image_size=40, seed=5
    )


def _evaluated(*, dataset: GeneratedDataset, run_dir: Path) -> Run:
    output = run_dir.with_name(run_dir.name + "-evaluation")
    model = validation_predictions_write(
        labels=dataset_load(data_path=dataset.data_path, images_dir=dataset.images_dir),
        images_dir=dataset.images_dir,
        run_dir=run_dir,
        output_dir=output,
    )
    return Run(weights=model.get_weights(), evaluation=output)


def _trained(*, dataset: GeneratedDataset, run_dir: Path, config: TrainingConfig) -> Run:
    model_train(
        data_path=dataset.data_path,
        images_dir=dataset.images_dir,
        run_dir=run_dir,
        config=config,
        verbose=0,
        echo=lambda line: None,
    )
    return _evaluated(dataset=dataset, run_dir=run_dir)


@pytest.fixture(scope="module")
def first_run(small_dataset, tmp_path_factory) -> Run:
    return _trained(
        dataset=small_dataset, run_dir=tmp_path_factory.mktemp("seeded") / "run", config=SEEDED
    )


def test_the_same_seed_gives_the_same_weights_and_byte_equal_predictions(
    first_run, small_dataset, tmp_path
):
    run_dir = tmp_path / "run"
    call_command(
        "train_garment_model",
        "--data", str(small_dataset.data_path),
        "--images", str(small_dataset.images_dir),
        "--run-dir", str(run_dir),
        "--input-size", str(SEEDED.input_size),
        "--batch-size", str(SEEDED.batch_size),
        "--epochs", str(SEEDED.epochs),
        "--fine-tune-epochs", str(SEEDED.fine_tune_epochs),
        "--learning-rate", str(SEEDED.learning_rate),
        "--patience", str(SEEDED.patience),
        "--weights", SEEDED.weights,
        "--seed", str(SEEDED.seed),
        verbosity=0,
        stdout=io.StringIO(),
    )  # fmt: skip
    second = _evaluated(dataset=small_dataset, run_dir=run_dir)

    assert len(second.weights) == len(first_run.weights)
    for trained, again in zip(first_run.weights, second.weights, strict=True):
        np.testing.assert_array_equal(trained, again)
    for name in (PREDICTIONS_FILE, SCORES_FILE):
        assert (second.evaluation / name).read_bytes() == (first_run.evaluation / name).read_bytes()


def test_another_seed_gives_other_weights(first_run, small_dataset, tmp_path):
    other = _trained(
        dataset=small_dataset, run_dir=tmp_path / "run", config=replace(SEEDED, seed=8)
    )
    assert any(
        not np.array_equal(a, b) for a, b in zip(first_run.weights, other.weights, strict=True)
    )
    assert (other.evaluation / SCORES_FILE).read_bytes() != (
        first_run.evaluation / SCORES_FILE
    ).read_bytes()
