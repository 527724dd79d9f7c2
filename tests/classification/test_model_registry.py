"""Registering, converting, checking and promoting model versions."""

import numpy as np
import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction
from PIL import JpegImagePlugin

from classification.exceptions import ModelNotReady, ModelRegistrationError
from classification.management.commands import fetch_model
from classification.models import ModelVersion
from classification.registry import conversion
from classification.registry.services import (
    model_version_promote,
    model_version_register,
)
from classification.registry.sources import efficientnet_lite
from classification.serving.engine import get_runtime, serving_model_load
from classification.serving.imaging import (
    DEFAULT_PREPROCESSING,
    DRAFT_MARGIN_OPTION,
    jpeg_draft_margin,
)
from classification.serving.services import serving_model_scores
from classification.store import artifact_path, file_sha256
from tests.support.images import image_bytes
from tests.support.models import TINY_LABELS, build_tiny_keras_model, build_tiny_saved_model

pytestmark = pytest.mark.django_db


def test_keras_registration_stores_converts_and_checks_parity(tiny_keras_path):
    model_version = model_version_register(
        artifact_path=tiny_keras_path, name="tiny", labels=TINY_LABELS, input_size=32
    )
    assert (model_version.name, model_version.version) == ("tiny", 1)
    assert model_version.stage == ModelVersion.Stage.STAGING
    assert model_version.source_format == ModelVersion.Format.KERAS
    assert model_version.input_size == 32
    assert model_version.preprocessing == {"resample": "bilinear", "scale": [-1.0, 1.0]}
    assert jpeg_draft_margin(model_version.preprocessing) is None  # JPEGs decoded whole
    assert model_version.metrics["parity_max_abs_diff"] < 1e-4
    assert model_version.metrics["outputs"] == "probabilities"
    # Both artifacts are in the content-addressed store, under their checksums.
    assert model_version.source_sha256 == file_sha256(tiny_keras_path)
    served = artifact_path(model_version.artifact)
    assert served.name == f"{model_version.artifact_sha256}.tflite"
    assert file_sha256(served) == model_version.artifact_sha256
    assert served.stat().st_size == model_version.artifact_size


def test_registration_prints_no_savedmodel_signature(tiny_keras_path, capsys):
    # Keras prints every captured TensorSpec while converting: hundreds of lines in 'make run'.
    model_version_register(artifact_path=tiny_keras_path, name="tiny", labels=TINY_LABELS)
    assert "TensorSpec" not in capsys.readouterr().out


def test_versions_are_numbered_per_name(tiny_keras_path, register_model):
    assert register_model(tiny_keras_path, name="a", labels=TINY_LABELS).version == 1
    assert (
        register_model(tiny_keras_path, name="a", labels=TINY_LABELS, stage="staging").version == 2
    )
    assert register_model(tiny_keras_path, name="b", labels=TINY_LABELS).version == 1


def test_saved_model_and_tflite_artifacts_register(tmp_path):
    saved = build_tiny_saved_model(tmp_path / "saved")
    from_saved = model_version_register(artifact_path=saved, name="saved", labels=TINY_LABELS)
    assert from_saved.source_format == ModelVersion.Format.SAVED_MODEL
    assert from_saved.metrics["parity_max_abs_diff"] < 1e-4

    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(artifact_path(from_saved.artifact).read_bytes())
    from_tflite = model_version_register(artifact_path=tflite, name="lite", labels=TINY_LABELS)
    assert from_tflite.source_format == ModelVersion.Format.TFLITE
    assert from_tflite.metrics["parity_max_abs_diff"] is None  # no TensorFlow reference
    assert from_tflite.artifact_sha256 == from_saved.artifact_sha256


def test_a_model_that_outputs_logits_is_served_as_probabilities(tmp_path, api_client):
    path = build_tiny_keras_model(tmp_path / "logits.keras", logits=True)
    model_version = model_version_register(
        artifact_path=path, name="logits", labels=TINY_LABELS, stage="production"
    )
    assert model_version.metrics["outputs"] == "logits"
    model = get_runtime().serving_model("logits")
    probabilities = model.probabilities(np.zeros((1, 32, 32, 3), dtype=np.float32))
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert (probabilities >= 0).all()


def test_label_count_must_match_the_outputs(tiny_keras_path):
    with pytest.raises(ModelRegistrationError, match="3 outputs but 2 labels"):
        model_version_register(artifact_path=tiny_keras_path, name="tiny", labels=["a", "b"])
    assert not ModelVersion.objects.exists()


def test_wrong_input_size_is_refused(tiny_keras_path):
    with pytest.raises(ModelRegistrationError, match="32x32"):
        model_version_register(
            artifact_path=tiny_keras_path, name="tiny", labels=TINY_LABELS, input_size=224
        )


@pytest.mark.parametrize(
    "preprocessing", [{"crop": 0}, {"crop": 1.5}, {"resample": "sinc"}, {"scale": [1.0]}]
)
def test_preprocessing_that_serving_cannot_apply_is_refused(tiny_keras_path, preprocessing):
    with pytest.raises(ModelRegistrationError, match="cannot be applied"):
        model_version_register(
            artifact_path=tiny_keras_path,
            name="tiny",
            labels=TINY_LABELS,
            preprocessing=preprocessing,
        )
    assert not ModelVersion.objects.exists()


def test_a_conversion_that_disagrees_with_tensorflow_is_refused(tiny_keras_path, monkeypatch):
    real_convert = conversion.model_convert

    def convert_with_a_wrong_reference(**kwargs):
        converted = real_convert(**kwargs)
        wrong = lambda batch: converted.reference(batch)[:, ::-1]  # noqa: E731
        return conversion.ConvertedModel(
            tflite=converted.tflite,
            input_size=converted.input_size,
            num_outputs=converted.num_outputs,
            reference=wrong,
        )

    monkeypatch.setattr(
        "classification.registry.classifier.model_convert", convert_with_a_wrong_reference
    )
    with pytest.raises(ModelRegistrationError, match="disagree"):
        model_version_register(artifact_path=tiny_keras_path, name="tiny", labels=TINY_LABELS)
    assert not ModelVersion.objects.exists()


def test_unknown_artifact_types_are_refused(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")
    with pytest.raises(ModelRegistrationError, match="not a Keras file"):
        model_version_register(artifact_path=path, name="x", labels=TINY_LABELS)


def test_promotion_archives_the_previous_production_version(tiny_keras_path, register_model):
    first = register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS)
    second = register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS, stage="staging")
    model_version_promote(model_version=second)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.stage == ModelVersion.Stage.ARCHIVED
    assert second.stage == ModelVersion.Stage.PRODUCTION
    # Rolling back is promoting the older version again.
    model_version_promote(model_version=first)
    assert ModelVersion.objects.get(stage="production").version == 1


def test_the_database_allows_one_production_version_per_name(tiny_keras_path, register_model):
    register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS)
    second = register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS, stage="staging")
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=second.pk).update(stage="production")


def test_the_runtime_switches_to_a_promoted_version(tiny_keras_path, register_model, settings):
    first = register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS)
    second = register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS, stage="staging")
    runtime = get_runtime()
    runtime.refresh_seconds = 0
    assert runtime.serving_model("tiny").version == first.version
    model_version_promote(model_version=second)
    assert runtime.serving_model("tiny").version == second.version


def test_a_tampered_artifact_is_never_served(tiny_keras_path, tmp_path, settings, caplog):
    settings.MODEL_STORE = tmp_path / "store"
    model_version = model_version_register(
        artifact_path=tiny_keras_path, name="tiny", labels=TINY_LABELS, stage="production"
    )
    path = artifact_path(model_version.artifact)
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelNotReady):
        get_runtime().serving_model("tiny")
    assert "SHA-256" in caplog.text


def test_register_and_promote_commands(tiny_keras_path, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(TINY_LABELS) + "\n")
    call_command("register_model", str(tiny_keras_path), "--name", "cmd", "--labels", str(labels))
    call_command("register_model", str(tiny_keras_path), "--name", "cmd", "--labels", str(labels))
    assert not ModelVersion.objects.filter(stage="production").exists()
    call_command("promote_model", "cmd", "2")
    assert ModelVersion.objects.get(stage="production").version == 2
    assert "cmd v2 is in production" in capsys.readouterr().out


# --- The JPEG draft margin a version records -----------------------------------------------


def _jpeg_sizes_drafted(monkeypatch) -> list[tuple]:
    calls: list[tuple] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        calls.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return calls


@pytest.mark.parametrize(("margin", "asked"), [(None, None), (2, (64, 64)), (1.5, (48, 48))])
def test_a_version_drafts_large_jpegs_only_with_the_margin_it_records(
    tiny_keras_path, monkeypatch, settings, margin, asked
):
    settings.IMAGE_JPEG_DRAFT = True
    preprocessing = {} if margin is None else {DRAFT_MARGIN_OPTION: margin}
    version = model_version_register(
        artifact_path=tiny_keras_path,
        name="tiny",
        labels=TINY_LABELS,
        input_size=32,
        preprocessing=preprocessing,
    )
    assert jpeg_draft_margin(version.preprocessing) == margin
    drafted = _jpeg_sizes_drafted(monkeypatch)
    scores = serving_model_scores(
        model=serving_model_load(version),
        image_bytes=image_bytes(format="JPEG", size=(2000, 1500), color=(200, 30, 30)),
    )
    assert (scores.width, scores.height) == (2000, 1500)
    assert drafted == ([] if asked is None else [asked])


@pytest.mark.parametrize("margin", [0.5, "two", True])
def test_a_margin_below_one_or_not_a_number_is_refused(tiny_keras_path, margin):
    with pytest.raises(ModelRegistrationError, match="jpeg_draft_margin must be a number"):
        model_version_register(
            artifact_path=tiny_keras_path,
            name="tiny",
            labels=TINY_LABELS,
            preprocessing={DRAFT_MARGIN_OPTION: margin},
        )
    assert not ModelVersion.objects.exists()


def test_the_offline_recipes_record_their_validated_margins(tiny_keras_path):
    # The ImageNet model's recipe records the margin; a version registered without it (before
    # the draft was validated) is outdated, so 'make run' registers the recipe as a new version.
    assert jpeg_draft_margin(efficientnet_lite.PREPROCESSING) == 2.0
    # The dog-breed model records the defaults (too few labelled dog photos to validate one).
    assert jpeg_draft_margin(DEFAULT_PREPROCESSING) is None
    model_version_register(
        artifact_path=tiny_keras_path,
        name="imagenet-lite0",
        labels=TINY_LABELS,
        preprocessing=efficientnet_lite.PREPROCESSING_UNDRAFTED,
    )
    assert fetch_model._outdated_version("imagenet-lite0", name="imagenet-lite0") is not None
    model_version_register(
        artifact_path=tiny_keras_path,
        name="imagenet-lite0",
        labels=TINY_LABELS,
        preprocessing=efficientnet_lite.PREPROCESSING,
    )
    assert fetch_model._outdated_version("imagenet-lite0", name="imagenet-lite0") is None
