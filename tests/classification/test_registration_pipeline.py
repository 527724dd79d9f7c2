"""The registration pipeline's shared steps, seen through a kind made for the test."""

from pathlib import Path

import pytest

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.pipeline import (
    Artifact,
    Parity,
    VersionRecord,
    preprocessing_with_defaults,
    version_register,
)
from classification.store import artifact_path, file_sha256

pytestmark = pytest.mark.django_db


class NoteKind:
    """A kind whose 'conversion' is a few bytes and whose parity difference the test sets."""

    kind = ModelVersion.Kind.CLASSIFIER

    def __init__(self, *, difference: float | None = 0.0, preprocessing: dict | None = None):
        self.difference = difference
        self.preprocessing = preprocessing_with_defaults(preprocessing)
        self.converted = 0

    def convert(self) -> bytes:
        self.converted += 1
        return b"flat buffer"

    def parity_check(self, converted: bytes) -> Parity:
        return Parity(
            reference="the notebook",
            differences={"scores": self.difference},
            metrics={"parity_max_abs_diff": self.difference},
        )

    def describe(self, converted: bytes, *, workdir: Path) -> VersionRecord:
        source = workdir / "source.keras"
        source.write_bytes(b"as registered")
        return VersionRecord(
            source_format=ModelVersion.Format.KERAS,
            source_artifact=Artifact(source),
            artifact=Artifact(converted, suffix=".tflite"),
            labels=["a", "b"],
            input_size=8,
            source="made by the test",
            fields={"zero_shot": {"template": "{}", "parts": [Artifact(b"a part", suffix=".txt")]}},
        )


@pytest.fixture
def empty_store(settings, tmp_path) -> Path:
    settings.MODEL_STORE = tmp_path / "store"
    return settings.MODEL_STORE


def test_every_artifact_of_a_kind_is_stored_under_its_checksum(empty_store):
    version = version_register(registration=NoteKind(), name="notes")
    assert (version.name, version.version, version.stage) == ("notes", 1, "staging")
    assert version.source == "made by the test"
    assert artifact_path(version.artifact).read_bytes() == b"flat buffer"
    assert artifact_path(version.source_artifact).read_bytes() == b"as registered"
    assert version.source_artifact.endswith(".keras")
    # An artifact inside the kind's own fields becomes a reference to the stored file.
    [part] = version.zero_shot["parts"]
    assert part == {"artifact": f"{part['sha256']}.txt", "sha256": part["sha256"]}
    assert file_sha256(artifact_path(part["artifact"])) == part["sha256"]
    assert version.zero_shot["template"] == "{}"


def test_the_callers_source_and_stage_win(empty_store):
    first = version_register(registration=NoteKind(), name="notes", stage="production")
    second = version_register(
        registration=NoteKind(), name="notes", stage="production", source="from the caller"
    )
    first.refresh_from_db()
    assert first.stage == "archived" and second.stage == "production"
    assert second.source == "from the caller"


def test_a_difference_at_the_tolerance_stores_and_registers_nothing(empty_store):
    with pytest.raises(ModelRegistrationError, match=r"the notebook disagree by 1\.00e-03 on the"):
        version_register(registration=NoteKind(difference=1e-3), name="notes", tolerance=1e-3)
    assert not ModelVersion.objects.exists()
    assert not empty_store.exists() or not any(empty_store.iterdir())


def test_no_reference_to_compare_with_is_no_disagreement(empty_store):
    version = version_register(registration=NoteKind(difference=None), name="notes")
    assert version.metrics["parity_max_abs_diff"] is None


def test_preprocessing_serving_cannot_apply_is_refused_before_converting(empty_store):
    kind = NoteKind(preprocessing={"resample": "sinc"})
    with pytest.raises(ModelRegistrationError, match="cannot be applied"):
        version_register(registration=kind, name="notes")
    assert kind.converted == 0
    assert not ModelVersion.objects.exists()
