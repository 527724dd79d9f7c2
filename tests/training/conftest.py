"""A generated garment dataset and one short training on it, shared by the session."""

import os

import pytest

from classification.models import ModelVersion
from classification.registry.services import model_version_create, model_version_promote
from training.dataset import GeneratedDataset, dataset_generate
from training.services import TrainingConfig, TrainingResult, model_train, training_run_register

# Small enough for two cores: 320 images of about 96 pixels, and a model input of their own
# size. At 64 pixels the smallest polka dots shrink to blobs of about 3 pixels, much like checker
# squares: dotted garments were taken for checkers and checkered dresses missed (the model
# leaned on checkers being common on shirts). At 96 the training takes about as long. Seeded:
# the figures the tests check are the same on every run.
TEST_CONFIG = TrainingConfig(
    input_size=96,
    batch_size=32,
    epochs=6,
    fine_tune_epochs=2,
    learning_rate=3e-3,
    patience=3,
    seed=0,
)

_FIELDS = [
    "kind", "source_format", "source_artifact", "source_sha256", "artifact", "artifact_sha256",
    "artifact_size", "labels", "tag_labels", "tag_thresholds", "input_size", "preprocessing",
    "metrics", "source",
]  # fmt: skip


@pytest.fixture(scope="session")
def garment_dataset(tmp_path_factory: pytest.TempPathFactory) -> GeneratedDataset:
    return dataset_generate(
        output_dir=tmp_path_factory.mktemp("garments"),
        count=320,
        test_count=40,
        image_size=96,
        seed=3,
    )


@pytest.fixture(scope="session")
def garment_run(
    garment_dataset: GeneratedDataset, tmp_path_factory: pytest.TempPathFactory
) -> TrainingResult:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return model_train(
        data_path=garment_dataset.data_path,
        images_dir=garment_dataset.images_dir,
        run_dir=tmp_path_factory.mktemp("garment-run"),
        config=TEST_CONFIG,
        verbose=0,
        echo=lambda line: None,
    )


@pytest.fixture(scope="session")
def _garment_registration() -> dict:
    return {}


@pytest.fixture
def garment_model(db, garment_run: TrainingResult, _garment_registration: dict) -> ModelVersion:
    """The trained run registered (converted once per session) in production as 'garments'."""
    if not _garment_registration:
        version = training_run_register(
            run_dir=garment_run.run_dir, name="garments", stage="production"
        )
        _garment_registration.update({f: getattr(version, f) for f in _FIELDS})
        return version
    version = model_version_create(name="garments", **_garment_registration)
    return model_version_promote(model_version=version)
