"""Zero-shot models: a tiny CLIP, trained in the session, registered and served through the API."""

import base64
import io

import numpy as np
import pytest

from classification.models import ModelVersion
from classification.registry.clip import CLIP_PREPROCESSING, cifar100_labels
from classification.registry.sources.tiny_clip import (
    TINY_CLIP_LABELS,
    TINY_CLIP_TEMPLATE,
    square_image,
)
from classification.serving.engine import get_runtime
from reporting.models import RequestLog
from tests.support.images import encode

pytestmark = pytest.mark.django_db


def square(colour: str, *, seed: int = 0) -> bytes:
    return encode(square_image(colour, seed=seed), "PNG")


def classify(api_client, image: bytes, **fields):
    body = {"image_base64": base64.b64encode(image).decode(), **fields}
    return api_client.post("/classify-image", body, format="json")


def servable(name: str = "clip"):
    return get_runtime().serving_model(name).servable


def test_registration_records_a_zero_shot_version(zero_shot_model: ModelVersion):
    assert zero_shot_model.kind == ModelVersion.Kind.ZERO_SHOT
    assert zero_shot_model.labels == TINY_CLIP_LABELS
    assert zero_shot_model.preprocessing == CLIP_PREPROCESSING
    assert zero_shot_model.zero_shot["template"] == TINY_CLIP_TEMPLATE
    assert zero_shot_model.zero_shot["logit_scale"] > 1
    assert zero_shot_model.metrics["parity_max_abs_diff"] < 1e-4
    assert zero_shot_model.metrics["text_parity_max_abs_diff"] < 1e-4


def test_stored_embeddings_equal_the_text_encoders_on_the_prompts(zero_shot_model):
    loaded = servable()
    for label, stored in zip(TINY_CLIP_LABELS, loaded.label_embeddings, strict=True):
        computed = loaded.text_embedding(TINY_CLIP_TEMPLATE.format(label))
        np.testing.assert_allclose(computed, stored, atol=1e-5)
        assert abs(float(np.linalg.norm(stored)) - 1.0) < 1e-5


@pytest.mark.parametrize("colour", ["red", "green", "blue"])
def test_a_square_is_answered_by_its_colour(api_client, zero_shot_model, colour):
    response = classify(api_client, square(colour, seed=7))
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["classification"] == f"{colour} square"
    assert body["model"] == {"name": "clip", "version": zero_shot_model.version}
    assert next(p["label"] for p in body["predictions"]) == f"{colour} square"
    assert sum(p["confidence"] for p in body["predictions"]) == pytest.approx(1.0, abs=1e-5)


def test_per_request_labels_in_another_order_and_with_extra_labels(api_client, zero_shot_model):
    labels = ["cat", "blue square", "bicycle", "red square", "green square", "dog"]
    response = classify(api_client, square("red", seed=8), labels=labels, top_k=6)
    assert response.status_code == 200, response.json()
    predictions = response.json()["predictions"]
    assert predictions[0]["label"] == "red square"
    assert sorted(p["label"] for p in predictions) == sorted(labels)
    # The version's own labels, asked for per request, score as the stored embeddings do.
    own = classify(api_client, square("red", seed=8), labels=TINY_CLIP_LABELS).json()
    stored = classify(api_client, square("red", seed=8)).json()
    for mine, theirs in zip(own["predictions"], stored["predictions"], strict=True):
        assert mine["label"] == theirs["label"]
        assert mine["confidence"] == pytest.approx(theirs["confidence"], abs=1e-4)


def test_label_embeddings_are_computed_once_per_label(api_client, zero_shot_model):
    labels = ["red square", "cat", "dog"]
    assert classify(api_client, square("red", seed=1), labels=labels).status_code == 200
    loaded = servable()
    after_first = loaded.text_encoder_invocations
    assert after_first == 3
    # Another image (no result cache hit), the same labels: the text encoder does not run.
    response = classify(api_client, square("blue", seed=2), labels=list(reversed(labels)))
    assert response.status_code == 200 and response.json()["cached"] is False
    assert loaded.text_encoder_invocations == after_first
    classify(api_client, square("blue", seed=2), labels=[*labels, "bicycle"])
    assert loaded.text_encoder_invocations == after_first + 1


def test_the_cache_key_carries_the_label_set(api_client, zero_shot_model):
    image = square("green", seed=3)
    assert classify(api_client, image, labels=["green square", "cat"]).json()["cached"] is False
    assert classify(api_client, image, labels=["cat", "green square"]).json()["cached"] is False
    assert classify(api_client, image).json()["cached"] is False
    again = classify(api_client, image, labels=["green square", "cat"]).json()
    assert again["cached"] is True and [p["label"] for p in again["predictions"]] == [
        "green square",
        "cat",
    ]


def test_url_entries_carry_the_label_set(api_client, zero_shot_model, image_server):
    image_server.route(
        "/green.png", body=square("green", seed=4), headers={"Content-Type": "image/png"}
    )
    url = f"{image_server.base}/green.png"
    post = lambda **fields: api_client.post(  # noqa: E731
        "/classify-image", {"image_url": url, **fields}, format="json"
    ).json()
    assert post(labels=["cat", "green square"])["cached"] is False
    assert post(labels=["dog", "green square"])["cached"] is False  # another label set
    assert post()["cached"] is False  # the version's own labels
    assert post(labels=["cat", "green square"])["cached"] is True


def test_labels_in_a_multipart_form(api_client, zero_shot_model):
    file = io.BytesIO(square("blue", seed=5))
    file.name = "blue.png"
    response = api_client.post(
        "/classify-image",
        {"image": file, "labels": ["cat", "blue square"]},
        format="multipart",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["classification"] == "blue square"


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([], "labels: This list may not be empty."),
        ([f"label {i}" for i in range(101)], "labels: Ensure this field has no more than 100"),
        (["cat", 42], "labels: label 2: Not a valid string."),
        (["cat", ""], "labels: label 2: This field may not be blank."),
        (["x" * 10_000], "labels: label 1: Ensure this field has no more than 300 characters."),
        ("red square", 'labels: Expected a list of items but got type "str".'),
        (["cat " * 74], "labels: label 1 is 80 tokens long"),
    ],
)
def test_bad_labels_answer_400_and_are_logged(api_client, zero_shot_model, labels, message):
    response = classify(api_client, square("red"), labels=labels)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(message), error["message"]
    [row] = RequestLog.objects.all()
    assert row.status_code == 400 and row.error_code == "invalid_request"


def test_labels_on_a_classifier_are_refused(api_client, tiny_model):
    response = classify(api_client, square("red"), labels=["cat"], model="tiny")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_request",
        "message": "labels: model 'tiny' is a classifier model with fixed labels; per-request "
        "labels need a zero-shot model.",
    }
    assert RequestLog.objects.get().status_code == 400


def test_cifar100_labels_are_the_data_sets():
    labels = cifar100_labels()
    assert len(labels) == len(set(labels)) == 100
    assert labels[:3] == ["apple", "aquarium fish", "baby"] and labels[-1] == "worm"


def test_register_model_command_registers_a_zero_shot_version(tiny_clip_preset, tmp_path):
    from django.core.management import call_command

    labels = tmp_path / "labels.txt"
    labels.write_text("red square\ngreen square\nblue square\ncat\n")
    out = io.StringIO()
    call_command(
        "register_model",
        str(tiny_clip_preset),
        "--kind=zero-shot",
        "--name=cmd-clip",
        f"--labels={labels}",
        "--template=a photo of a {}",
        "--stage=production",
        stdout=out,
    )
    assert "zero-shot, 4 labels" in out.getvalue()
    version = ModelVersion.objects.get(name="cmd-clip")
    assert version.kind == "zero_shot" and version.labels[-1] == "cat"


def test_an_unavailable_preset_name_fails_with_advice(monkeypatch):
    import socket

    from classification.exceptions import ModelRegistrationError
    from classification.registry.clip import clip_checkpoint_load

    # A machine without internet: every name lookup fails at once (nothing leaves loopback).
    looked_up: list[str] = []

    def offline(host, *args, **kwargs):
        looked_up.append(str(host))
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    with pytest.raises(ModelRegistrationError, match="needs internet"):
        clip_checkpoint_load(preset="clip_vit_base_patch32")
    assert looked_up and all("kaggle" in host for host in looked_up)  # its hub, nothing else


def test_a_checkpoint_built_elsewhere_registers_and_answers(api_client, tiny_clip_preset):
    # Another source builds the KerasHub backbone its own way and has only the vocabulary and
    # merges: the registration checks our tokenizer against KerasHub's made from them.
    import keras_hub

    from classification.registry.clip import ClipCheckpoint, zero_shot_register
    from classification.registry.sources.tiny_clip import tiny_vocabulary

    vocabulary, merges = tiny_vocabulary()
    checkpoint = ClipCheckpoint(
        backbone=keras_hub.models.CLIPBackbone.from_preset(str(tiny_clip_preset)),
        vocabulary=vocabulary,
        merges=merges,
        pad_token_id=0,
        source="a hub of its own",
    )
    version = zero_shot_register(
        checkpoint=checkpoint,
        name="elsewhere",
        labels=TINY_CLIP_LABELS,
        template=TINY_CLIP_TEMPLATE,
        stage="production",
    )
    assert version.kind == ModelVersion.Kind.ZERO_SHOT
    assert version.source == "a hub of its own"
    assert version.metrics["text_parity_max_abs_diff"] < 1e-4
    response = classify(api_client, square("blue", seed=7), model="elsewhere")
    assert response.status_code == 200, response.json()
    assert response.json()["classification"] == "blue square"


@pytest.mark.parametrize("given", [{}, {"preset": "a-preset", "checkpoint": object()}])
def test_a_zero_shot_registration_takes_a_preset_or_a_checkpoint(given):
    from classification.exceptions import ModelRegistrationError
    from classification.registry.clip import zero_shot_register

    with pytest.raises(ModelRegistrationError, match="a preset or a checkpoint"):
        zero_shot_register(name="clip", labels=["cat"], **given)
    assert not ModelVersion.objects.exists()


def test_the_admin_shows_a_zero_shot_versions_labels_and_template(client, zero_shot_model):
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    page = client.get(f"/admin/classification/modelversion/{zero_shot_model.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Zero-shot prompt template" in text and "a photo of a {}" in text
    assert "red square, green square, blue square" in text
