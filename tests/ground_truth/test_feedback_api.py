"""POST /feedback over HTTP: feedback on real answers of every model kind, stored and counted,
its replacement, and every refusal in the JSON error shape with its code on the access line."""

import base64
import io
import logging
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from classification.registry.sources.tiny_clip import TINY_CLIP_LABELS
from ground_truth.models import Feedback
from ground_truth.selectors import feedback_accuracy
from reporting.models import RequestLog
from tests.ground_truth.conftest import (
    BLUE,
    HOME_ADDRESS,
    OTHER_ADDRESS,
    RED,
    classify,
    give_feedback,
    square,
)
from tests.support.models import TINY_LABELS

pytestmark = pytest.mark.django_db


def error_of(response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"]


def other_label(predicted: str, labels: list[str]) -> str:
    return next(label for label in labels if label != predicted)


# --- Stored and counted, for each kind -----------------------------------------------------


def test_a_right_answer_of_a_classifier_is_stored_and_counted(classifier_version):
    client = APIClient()
    answer = classify(client)
    response = give_feedback(client, request_id=answer.request_id, correct=True)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["request_id"] == answer.request_id
    assert body["model"] == {"name": "tiny", "version": classifier_version.version}
    assert body["correct"] is True
    assert body["label"] == body["predicted_label"] == answer.body["classification"]
    assert body["confidence"] == pytest.approx(answer.body["confidence"])
    assert body["review"] == "pending"
    assert body["image_kept"] is False
    feedback = Feedback.objects.get()
    assert feedback.request_log.request_id == answer.request_id
    assert feedback.model_version == classifier_version
    assert feedback.caller.startswith("anon:") and feedback.user is None
    accuracy = feedback_accuracy(model_version=classifier_version)
    assert (accuracy.successes, accuracy.n) == (1, 1)


def test_a_wrong_answer_of_a_classifier_takes_the_right_label(classifier_version, alice_client):
    right = classify(alice_client, image=RED)
    wrong = classify(alice_client, image=BLUE)
    assert give_feedback(alice_client, request_id=right.request_id, correct=True).status_code == 201
    label = other_label(wrong.body["classification"], TINY_LABELS)
    response = give_feedback(alice_client, request_id=wrong.request_id, correct=False, label=label)
    assert response.status_code == 201, response.json()
    assert response.json()["label"] == label
    assert response.json()["predicted_label"] == wrong.body["classification"]
    feedback = Feedback.objects.get(request_log__request_id=wrong.request_id)
    assert feedback.user.username == "alice" and feedback.caller == f"user:{feedback.user.pk}"
    accuracy = feedback_accuracy(model_version=classifier_version)
    assert (accuracy.successes, accuracy.n) == (1, 2)


def test_zero_shot_feedback_names_one_of_the_labels_the_request_sent(zero_shot_version):
    client = APIClient()
    labels = ["cat", "red square", "dog"]
    answer = classify(client, image=square("red", seed=3), model="clip", labels=labels)
    assert RequestLog.objects.get(request_id=answer.request_id).labels == labels
    predicted = answer.body["classification"]
    # A label of the version that the request did not send is not one the answer could give.
    refused = give_feedback(
        client, request_id=answer.request_id, correct=False, label="blue square"
    )
    assert refused.status_code == 400 and error_of(refused) == "unknown_label"
    label = other_label(predicted, labels)
    response = give_feedback(client, request_id=answer.request_id, correct=False, label=label)
    assert response.status_code == 201, response.json()
    assert response.json()["label"] == label
    assert feedback_accuracy(model_version=zero_shot_version).n == 1


def test_zero_shot_feedback_without_request_labels_names_a_label_of_the_version(
    zero_shot_version,
):
    client = APIClient()
    answer = classify(client, image=square("green", seed=4), model="clip")
    assert RequestLog.objects.get(request_id=answer.request_id).labels is None
    refused = give_feedback(client, request_id=answer.request_id, correct=False, label="cat")
    assert refused.status_code == 400 and error_of(refused) == "unknown_label"
    label = other_label(answer.body["classification"], TINY_CLIP_LABELS)
    response = give_feedback(client, request_id=answer.request_id, correct=False, label=label)
    assert response.status_code == 201, response.json()


def test_multi_task_feedback_gives_the_category_and_the_tags(multi_task_version):
    client = APIClient()
    answer = classify(client, image=RED, model="tiny-tags")
    assert answer.body["classification"] == "red"
    response = give_feedback(
        client, request_id=answer.request_id, correct=False, label="green", tags=["cool"]
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["label"], body["tags"]) == ("green", ["cool"])
    assert body["predicted_tags"] == ["warm"]
    accuracy = feedback_accuracy(model_version=multi_task_version)
    assert (accuracy.successes, accuracy.n) == (0, 1)


def test_multi_task_refusals_name_the_tags(multi_task_version):
    client = APIClient()
    answer = classify(client, image=RED, model="tiny-tags")
    no_tags = give_feedback(client, request_id=answer.request_id, correct=False, label="green")
    assert no_tags.status_code == 400 and error_of(no_tags) == "invalid_request"
    unknown = give_feedback(
        client, request_id=answer.request_id, correct=False, label="green", tags=["striped"]
    )
    assert unknown.status_code == 400 and error_of(unknown) == "unknown_label"
    assert "striped" in unknown.json()["error"]["message"]
    # Right: the tags default to those the answer gave; they may also be corrected.
    right = give_feedback(client, request_id=answer.request_id, correct=True)
    assert right.status_code == 201 and right.json()["tags"] == ["warm"]
    corrected = give_feedback(client, request_id=answer.request_id, correct=True, tags=[])
    assert corrected.status_code == 200 and corrected.json()["tags"] == []


def test_tags_for_a_model_without_tags_are_refused(classifier_version):
    client = APIClient()
    answer = classify(client)
    response = give_feedback(client, request_id=answer.request_id, correct=True, tags=["warm"])
    assert response.status_code == 400 and error_of(response) == "invalid_request"


def test_feedback_by_image_and_model_finds_the_callers_newest_answer(classifier_version):
    client = APIClient()
    classify(client, image=RED)
    newest = classify(client, image=RED)
    sha256 = newest.body["image_sha256"]
    response = give_feedback(client, image_sha256=sha256, model="tiny", correct=True)
    assert response.status_code == 201, response.json()
    assert response.json()["request_id"] == newest.request_id
    with_version = give_feedback(
        client,
        image_sha256=sha256,
        model="tiny",
        model_version=classifier_version.version,
        correct=True,
    )
    assert with_version.status_code == 200
    # Another client has no answer for that image.
    other = give_feedback(
        client, address=OTHER_ADDRESS, image_sha256=sha256, model="tiny", correct=True
    )
    assert other.status_code == 404 and error_of(other) == "request_not_found"
    unknown_version = give_feedback(
        client, image_sha256=sha256, model="tiny", model_version=99, correct=True
    )
    assert unknown_version.status_code == 404


# --- Replacement ---------------------------------------------------------------------------


def test_a_second_feedback_replaces_the_first_and_goes_back_to_review(
    classifier_version, admin_user
):
    client = APIClient()
    answer = classify(client)
    first = give_feedback(client, request_id=answer.request_id, correct=True)
    assert first.status_code == 201
    Feedback.objects.update(review="trusted", reviewed_by=admin_user, reviewed_at=timezone.now())
    label = other_label(answer.body["classification"], TINY_LABELS)
    second = give_feedback(client, request_id=answer.request_id, correct=False, label=label)
    assert second.status_code == 200, second.json()
    assert second.json()["id"] == first.json()["id"]
    feedback = Feedback.objects.get()
    assert (feedback.correct, feedback.label, feedback.review) == (False, label, "pending")
    assert feedback.reviewed_by is None and feedback.reviewed_at is None


def test_each_caller_has_one_feedback_of_their_own_per_request(classifier_version, alice):
    """A signed-in user's feedback on an anonymous request from the same client is theirs."""
    anonymous = APIClient()
    answer = classify(anonymous)
    assert give_feedback(anonymous, request_id=answer.request_id, correct=True).status_code == 201
    signed_in = APIClient()
    signed_in.force_authenticate(alice)
    response = give_feedback(signed_in, request_id=answer.request_id, correct=True)
    assert response.status_code == 201
    assert sorted(Feedback.objects.values_list("caller", flat=True))[1] == f"user:{alice.pk}"


# --- Refusals ------------------------------------------------------------------------------


@pytest.fixture
def access_lines(caplog):
    caplog.set_level(logging.INFO, logger="core.access")

    def lines(path: str = "/feedback") -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "core.access" and r.path == path]

    return lines


def test_an_unknown_request_is_404_and_logged(classifier_version, access_lines):
    response = give_feedback(APIClient(), request_id="no-such-request", correct=True)
    assert response.status_code == 404 and error_of(response) == "request_not_found"
    (line,) = access_lines()
    assert (line.status, line.error_code) == (404, "request_not_found")


def test_an_unknown_label_is_400_and_logged(classifier_version, access_lines):
    client = APIClient()
    answer = classify(client)
    response = give_feedback(client, request_id=answer.request_id, correct=False, label="mauve")
    assert response.status_code == 400 and error_of(response) == "unknown_label"
    assert access_lines()[-1].error_code == "unknown_label"
    assert not Feedback.objects.exists()


def test_another_users_request_is_403(classifier_version, alice_client, bob_client, access_lines):
    answer = classify(alice_client)
    response = give_feedback(bob_client, request_id=answer.request_id, correct=True)
    assert response.status_code == 403 and error_of(response) == "feedback_forbidden"
    assert access_lines()[-1].error_code == "feedback_forbidden"
    # Nor may an anonymous caller from the same address judge a signed-in user's request.
    anonymous = give_feedback(APIClient(), request_id=answer.request_id, correct=True)
    assert anonymous.status_code == 403
    # The user may, from anywhere.
    mine = give_feedback(
        alice_client, address=OTHER_ADDRESS, request_id=answer.request_id, correct=True
    )
    assert mine.status_code == 201


def test_another_clients_anonymous_request_is_403(classifier_version, bob_client):
    client = APIClient()
    answer = classify(client, address=HOME_ADDRESS)
    response = give_feedback(
        client, address=OTHER_ADDRESS, request_id=answer.request_id, correct=True
    )
    assert response.status_code == 403 and error_of(response) == "feedback_forbidden"
    # A signed-in caller from another address neither.
    response = give_feedback(
        bob_client, address=OTHER_ADDRESS, request_id=answer.request_id, correct=True
    )
    assert response.status_code == 403


def test_an_anonymous_request_past_its_window_is_403(classifier_version, settings):
    client = APIClient()
    answer = classify(client)
    settings.FEEDBACK_ANON_WINDOW_SECONDS = 600
    RequestLog.objects.update(created_at=timezone.now() - timedelta(seconds=601))
    response = give_feedback(client, request_id=answer.request_id, correct=True)
    assert response.status_code == 403 and error_of(response) == "feedback_forbidden"
    by_image = give_feedback(
        client, image_sha256=answer.body["image_sha256"], model="tiny", correct=True
    )
    assert by_image.status_code == 404
    RequestLog.objects.update(created_at=timezone.now() - timedelta(seconds=590))
    assert give_feedback(client, request_id=answer.request_id, correct=True).status_code == 201


def test_a_refused_request_has_no_answer_to_judge(classifier_version):
    client = APIClient()
    refused = client.post(
        "/classify-image", {"model": "tiny"}, format="json", REMOTE_ADDR=HOME_ADDRESS
    )
    assert refused.status_code == 400
    response = give_feedback(client, request_id=refused["X-Request-ID"], correct=True)
    assert response.status_code == 400 and error_of(response) == "request_not_answered"


def test_throttled_feedback_is_429_with_retry_after(classifier_version, settings, access_lines):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**rates, "feedback_anon": "2/minute"},
    }
    client = APIClient()
    answer = classify(client)
    for _ in range(2):
        assert give_feedback(client, request_id=answer.request_id, correct=True).status_code in (
            200,
            201,
        )
    response = give_feedback(client, request_id=answer.request_id, correct=True)
    assert response.status_code == 429 and error_of(response) == "throttled"
    assert 1 <= int(response["Retry-After"]) <= 61
    assert access_lines()[-1].error_code == "throttled"
    # Another client has its own limit.
    classify(client, address=OTHER_ADDRESS)
    other = give_feedback(client, address=OTHER_ADDRESS, request_id="unknown-id", correct=True)
    assert other.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"correct": True},
        {"request_id": "x"},
        {"request_id": "x", "correct": "perhaps"},
        {"request_id": "x", "image_sha256": "a" * 64, "model": "tiny", "correct": True},
        {"image_sha256": "a" * 64, "correct": True},
        {"image_sha256": "A" * 64, "model": "tiny", "correct": True},
        {"request_id": "x", "model_version": 1, "correct": True},
        {"request_id": 42, "correct": True},
        {"request_id": "x", "correct": True, "label": ["red"]},
        {"request_id": "x", "correct": False, "tags": "warm"},
        {"request_id": "x", "correct": True, "image_base64": "not base64!"},
        {"request_id": "x", "correct": True, "image_base64": ""},
        {"request_id": "x" * 65, "correct": True},
    ],
)
def test_malformed_bodies_are_400(body, classifier_version):
    response = APIClient().post("/feedback", body, format="json")
    assert response.status_code == 400, response.content
    assert error_of(response) in {"invalid_request", "empty_image"}


def test_a_body_that_is_not_json_is_400():
    response = APIClient().post("/feedback", b"{not json", content_type="application/json")
    assert response.status_code == 400 and error_of(response) == "malformed_request"


def test_a_right_answer_with_another_label_is_refused(classifier_version):
    client = APIClient()
    answer = classify(client)
    label = other_label(answer.body["classification"], TINY_LABELS)
    response = give_feedback(client, request_id=answer.request_id, correct=True, label=label)
    assert response.status_code == 400 and error_of(response) == "invalid_request"
    same = give_feedback(
        client, request_id=answer.request_id, correct=False, label=answer.body["classification"]
    )
    assert same.status_code == 400


# --- The image sent along -----------------------------------------------------------------


def test_the_requests_image_is_kept_for_the_retention_days(
    classifier_version, feedback_images, settings
):
    settings.FEEDBACK_IMAGE_RETENTION_DAYS = 7
    client = APIClient()
    answer = classify(client, image=RED)
    response = give_feedback(
        client,
        request_id=answer.request_id,
        correct=True,
        image_base64=base64.b64encode(RED).decode(),
    )
    assert response.status_code == 201, response.json()
    assert response.json()["image_kept"] is True
    feedback = Feedback.objects.get()
    sha256 = answer.body["image_sha256"]
    path = feedback_images / feedback.image
    assert feedback.image == f"{sha256[:2]}/{sha256}"
    assert path.read_bytes() == RED
    expected = timezone.now() + timedelta(days=7)
    assert abs((feedback.image_expires_at - expected).total_seconds()) < 60


def test_an_uploaded_image_in_a_multipart_form(classifier_version, feedback_images):
    client = APIClient()
    answer = classify(client, image=BLUE)
    upload = io.BytesIO(BLUE)
    upload.name = "photo.png"
    label = other_label(answer.body["classification"], TINY_LABELS)
    response = client.post(
        "/feedback",
        {"request_id": answer.request_id, "correct": "false", "label": label, "image": upload},
        format="multipart",
        REMOTE_ADDR=HOME_ADDRESS,
    )
    assert response.status_code == 201, response.json()
    assert (feedback_images / Feedback.objects.get().image).read_bytes() == BLUE


def test_a_multipart_form_without_correct_is_400(classifier_version):
    client = APIClient()
    answer = classify(client)
    response = client.post(
        "/feedback", {"request_id": answer.request_id}, format="multipart", REMOTE_ADDR=HOME_ADDRESS
    )
    assert response.status_code == 400 and "correct" in response.json()["error"]["message"]


def test_another_image_is_400_image_mismatch(classifier_version, feedback_images, access_lines):
    client = APIClient()
    answer = classify(client, image=RED)
    response = give_feedback(
        client,
        request_id=answer.request_id,
        correct=True,
        image_base64=base64.b64encode(BLUE).decode(),
    )
    assert response.status_code == 400 and error_of(response) == "image_mismatch"
    assert access_lines()[-1].error_code == "image_mismatch"
    assert not Feedback.objects.exists()
    assert not feedback_images.exists() or not any(feedback_images.rglob("*"))


def test_no_image_is_kept_with_zero_retention_days(classifier_version, feedback_images, settings):
    settings.FEEDBACK_IMAGE_RETENTION_DAYS = 0
    client = APIClient()
    answer = classify(client, image=RED)
    response = give_feedback(
        client,
        request_id=answer.request_id,
        correct=True,
        image_base64=base64.b64encode(RED).decode(),
    )
    assert response.status_code == 201
    assert response.json()["image_kept"] is False
    assert Feedback.objects.get().image == ""
    assert not feedback_images.exists()


def test_an_image_over_the_upload_limit_is_413(classifier_version, settings):
    settings.IMAGE_MAX_BYTES = 1000
    client = APIClient()
    response = give_feedback(
        client,
        request_id="x",
        correct=True,
        image_base64=base64.b64encode(b"\0" * 2000).decode(),
    )
    assert response.status_code == 413, response.content


def test_labels_sent_in_a_multipart_form_are_logged_for_feedback(zero_shot_version):
    client = APIClient()
    upload = io.BytesIO(square("blue", seed=5))
    upload.name = "square.png"
    response = client.post(
        "/classify-image",
        {"image": upload, "model": "clip", "labels": [" blue square", "bicycle"]},
        format="multipart",
        REMOTE_ADDR=HOME_ADDRESS,
    )
    assert response.status_code == 200, response.json()
    row = RequestLog.objects.get(request_id=response["X-Request-ID"])
    assert row.labels == ["blue square", "bicycle"]  # as the request was answered: trimmed
    label = other_label(response.json()["classification"], row.labels)
    feedback = give_feedback(client, request_id=row.request_id, correct=False, label=label)
    assert feedback.status_code == 201, feedback.json()


def test_anonymous_clients_behind_one_proxy_keep_apart(classifier_version, settings):
    """Behind NUM_PROXIES the client is the address the proxy names, as for the rate limits:
    two clients of one proxy cannot judge each other's requests."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    proxy = "10.0.0.7"
    alice, mallory = APIClient(), APIClient()
    body = {"image_base64": base64.b64encode(RED).decode(), "model": "tiny"}
    answer = alice.post(
        "/classify-image",
        body,
        format="json",
        REMOTE_ADDR=proxy,
        HTTP_X_FORWARDED_FOR="198.51.100.1",
    )
    assert answer.status_code == 200
    request_id = answer["X-Request-ID"]
    refused = mallory.post(
        "/feedback",
        {"request_id": request_id, "correct": True},
        format="json",
        REMOTE_ADDR=proxy,
        HTTP_X_FORWARDED_FOR="198.51.100.2",
    )
    assert refused.status_code == 403 and error_of(refused) == "feedback_forbidden"
    taken = alice.post(
        "/feedback",
        {"request_id": request_id, "correct": True},
        format="json",
        REMOTE_ADDR=proxy,
        HTTP_X_FORWARDED_FOR="198.51.100.1",
    )
    assert taken.status_code == 201
