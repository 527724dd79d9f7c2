"""Keras MobileNet (v1, alpha 1.0, 224) fetched like MobileNetV2: weights from Keras' location,
here a loopback server serving a weights file the test saves in Keras' own h5 layout."""

import hashlib

import pytest
from django.core.management import CommandError, call_command

from bench.loopback import serve_files
from classification.models import ModelVersion

pytestmark = pytest.mark.django_db


def _configure(settings, server, files, tmp_path):
    settings.MODEL_DOWNLOAD_CACHE = tmp_path / "downloads"
    settings.MOBILENET_WEIGHTS_URL = f"{server.url}/mobilenet_1_0_224_tf.h5"
    settings.MOBILENET_WEIGHTS_SHA256 = hashlib.sha256(
        files["/mobilenet_1_0_224_tf.h5"]
    ).hexdigest()
    settings.IMAGENET_CLASS_INDEX_URL = f"{server.url}/index.json"
    settings.IMAGENET_CLASS_INDEX_SHA256 = hashlib.sha256(files["/index.json"]).hexdigest()


def test_fetch_model_mobilenet_downloads_verifies_and_registers(
    mobilenet_files, settings, tmp_path
):
    with serve_files(mobilenet_files) as server:
        _configure(settings, server, mobilenet_files, tmp_path)
        call_command("fetch_model", "mobilenet", "--stage", "staging")
        assert server.hits["/mobilenet_1_0_224_tf.h5"] == 1
    version = ModelVersion.objects.get(name="mobilenet")
    assert not ModelVersion.objects.filter(name="imagenet").exists()  # MobileNetV2 keeps its name
    assert version.stage == "staging"
    assert version.input_size == 224
    assert len(version.labels) == 1000 and version.labels[7] == "class 7"
    assert version.preprocessing["scale"] == [-1.0, 1.0]  # Keras' 'tf' mode for MobileNet
    assert version.metrics["parity_max_abs_diff"] < 1e-4
    assert version.metrics["litert_num_threads"] == settings.LITERT_NUM_THREADS
    assert "Keras MobileNet," in version.source
    assert settings.MOBILENET_WEIGHTS_SHA256 in version.source


def test_imagenet_still_builds_mobilenet_v2_which_v1_weights_do_not_fit(
    mobilenet_files, settings, tmp_path
):
    # One shared path, but each name builds its own architecture.
    with serve_files(mobilenet_files) as server:
        _configure(settings, server, mobilenet_files, tmp_path)
        settings.IMAGENET_WEIGHTS_URL = settings.MOBILENET_WEIGHTS_URL
        settings.IMAGENET_WEIGHTS_SHA256 = settings.MOBILENET_WEIGHTS_SHA256
        with pytest.raises(CommandError, match="do not fit MobileNetV2"):
            call_command("fetch_model", "imagenet")
    assert not ModelVersion.objects.exists()
