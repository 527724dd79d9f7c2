"""The model manifest: registry rows exported beside the store, imported where they are absent
(the Docker image's build stage exports, its entrypoint imports)."""

import json
import shutil

import pytest
from django.core.management import CommandError, call_command

from classification.models import ModelVersion
from classification.store import artifact_path

pytestmark = pytest.mark.django_db


def test_export_then_import_into_an_empty_registry_recreates_the_versions(tiny_model, tmp_path):
    manifest = tmp_path / "manifest.json"
    call_command("model_manifest", "export", str(manifest))
    exported = json.loads(manifest.read_text())
    assert [(v["name"], v["version"], v["stage"]) for v in exported["versions"]] == [
        ("tiny", 1, "production")
    ]
    before = ModelVersion.objects.get()
    ModelVersion.objects.all().delete()

    call_command("model_manifest", "import", str(manifest))

    after = ModelVersion.objects.get()
    assert (after.name, after.version, after.stage) == ("tiny", 1, "production")
    assert after.promoted_at is not None
    for field in ("artifact", "artifact_sha256", "labels", "input_size", "preprocessing", "kind"):
        assert getattr(after, field) == getattr(before, field), field


def test_import_leaves_registered_names_alone(tiny_model, tmp_path):
    manifest = tmp_path / "manifest.json"
    call_command("model_manifest", "export", str(manifest))
    call_command("model_manifest", "import", str(manifest))  # a second container starting
    assert ModelVersion.objects.count() == 1


def test_import_refuses_an_artifact_missing_from_the_store(tiny_model, tmp_path, settings):
    manifest = tmp_path / "manifest.json"
    call_command("model_manifest", "export", str(manifest))
    ModelVersion.objects.all().delete()
    settings.MODEL_STORE = tmp_path / "empty-store"  # the session's store stays as it is
    (tmp_path / "empty-store").mkdir()
    assert not artifact_path(tiny_model.artifact).exists()
    with pytest.raises(CommandError, match="missing"):
        call_command("model_manifest", "import", str(manifest))
    assert not ModelVersion.objects.exists()


def test_import_refuses_a_zero_shot_version_whose_text_encoder_is_missing(
    zero_shot_model, tmp_path, settings
):
    manifest = tmp_path / "manifest.json"
    call_command("model_manifest", "export", str(manifest))
    ModelVersion.objects.all().delete()
    # A store with the version's files but the text encoder, which only its zero-shot field
    # names.
    store = tmp_path / "partial-store"
    store.mkdir()
    spec = zero_shot_model.zero_shot
    text_encoder = spec["text_encoder"]["artifact"]
    for name in [
        zero_shot_model.artifact,
        spec["vocabulary"]["artifact"],
        spec["merges"]["artifact"],
        spec["label_embeddings"]["artifact"],
    ]:
        shutil.copy(artifact_path(name), store / name)
    settings.MODEL_STORE = store
    with pytest.raises(CommandError, match=f"{text_encoder} is missing"):
        call_command("model_manifest", "import", str(manifest))
    assert not ModelVersion.objects.exists()
