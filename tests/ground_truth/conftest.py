"""Fixtures for ground truth: a tiny version of each kind in production, callers, and a helper
that classifies an image over HTTP and gives back its request id."""

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from classification.models import ModelVersion
from classification.registry.sources.tiny_clip import square_image
from tests.support.accounts import PASSWORD, bearer_client, token_pair
from tests.support.images import encode, image_bytes

# Anonymous callers are told apart by their address (the request log's client hash).
HOME_ADDRESS = "203.0.113.7"
OTHER_ADDRESS = "198.51.100.20"

# What the tiny models answer for these images (tests/support/models.py, tiny_clip).
RED = image_bytes(format="PNG", size=(32, 32), color=(230, 20, 20))
BLUE = image_bytes(format="PNG", size=(32, 32), color=(20, 20, 230))


@pytest.fixture
def classifier_version(tiny_model: ModelVersion) -> ModelVersion:
    """'tiny': a 3-class classifier (red, green, blue) in production."""
    return tiny_model


@pytest.fixture
def multi_task_version(tiny_multi_task_model: ModelVersion) -> ModelVersion:
    """'tiny-tags': category red / green / blue and tags warm / cool, in production."""
    return tiny_multi_task_model


@pytest.fixture
def zero_shot_version(zero_shot_model: ModelVersion) -> ModelVersion:
    """'clip': the tiny CLIP (red / green / blue square) in production."""
    return zero_shot_model


def square(colour: str, *, seed: int = 0) -> bytes:
    """A square the tiny CLIP tells by its colour."""
    return encode(square_image(colour, seed=seed), "PNG")


@pytest.fixture
def feedback_images(settings, tmp_path: Path) -> Path:
    """FEEDBACK_IMAGE_DIR of this test."""
    settings.FEEDBACK_IMAGE_DIR = tmp_path / "feedback-images"
    return settings.FEEDBACK_IMAGE_DIR


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user(username="alice", password=PASSWORD)


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user(username="bob", password=PASSWORD)


@pytest.fixture
def alice_client(alice) -> APIClient:
    return bearer_client(token_pair(alice)["access"])


@pytest.fixture
def bob_client(bob) -> APIClient:
    return bearer_client(token_pair(bob)["access"])


@dataclass
class Answer:
    request_id: str
    body: dict


def classify(
    client: APIClient,
    *,
    image: bytes = RED,
    model: str = "tiny",
    address: str = HOME_ADDRESS,
    **fields: object,
) -> Answer:
    """POST /classify-image with ``image`` (base64) from ``address``; the answer must be 200."""
    body = {"image_base64": base64.b64encode(image).decode(), "model": model, **fields}
    response = client.post("/classify-image", body, format="json", REMOTE_ADDR=address)
    assert response.status_code == 200, response.content
    return Answer(request_id=response["X-Request-ID"], body=response.json())


def give_feedback(client: APIClient, *, address: str = HOME_ADDRESS, **body: object):
    """POST /feedback (JSON) from ``address``."""
    return client.post("/feedback", body, format="json", REMOTE_ADDR=address)


@pytest.fixture
def classified() -> Callable[..., Answer]:
    """The helper ``classify``, for tests in other modules that take fixtures only."""
    return classify
