"""Forgetting a request: DELETE /feedback/<request_id> for its owner, and
`manage.py forget_request` for staff. Its feedback, kept images and shadow answers go; its log
row keeps no personal data and is exported again."""

import base64

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from ground_truth.models import Feedback, ShadowPrediction
from reporting.models import RequestLog
from tests.ground_truth.conftest import (
    BLUE,
    HOME_ADDRESS,
    OTHER_ADDRESS,
    RED,
    classify,
    give_feedback,
)
from tests.support.reporting import log_row

pytestmark = pytest.mark.django_db


def shadow_of(request_id: str, version) -> ShadowPrediction:
    return ShadowPrediction.objects.create(
        request_id=request_id,
        shadow_version=version,
        production_version=version,
        production_label="red",
        production_confidence=0.9,
        label="red",
        confidence=0.8,
        agrees=True,
        latency_seconds=0.01,
    )


def feedback_with_image(client, answer, image: bytes, **extra):
    response = give_feedback(
        client,
        request_id=answer.request_id,
        correct=True,
        image_base64=base64.b64encode(image).decode(),
        **extra,
    )
    assert response.status_code == 201, response.json()
    return Feedback.objects.get(id=response.json()["id"])


def test_the_owner_forgets_a_request(classifier_version, feedback_images, alice_client):
    answer = classify(alice_client, image=RED)
    feedback = feedback_with_image(alice_client, answer, RED)
    image = feedback_images / feedback.image
    shadow_of(answer.request_id, classifier_version)
    RequestLog.objects.update(exported_at=timezone.now())

    response = alice_client.delete(f"/feedback/{answer.request_id}")
    assert response.status_code == 204, response.content
    assert not Feedback.objects.exists()
    assert not image.exists()
    assert not ShadowPrediction.objects.exists()
    row = RequestLog.objects.get(request_id=answer.request_id)
    assert (row.image_sha256, row.client_hash, row.user, row.image_url) == ("", "", None, "")
    assert row.image_url_sha256 is None and row.image_url_key is None
    assert row.exported_at is None  # the Elasticsearch copy is replaced by the blank one
    assert row.top_label == answer.body["classification"]  # still counted in the statistics


def test_an_anonymous_owner_forgets_from_the_same_client(classifier_version):
    client = APIClient()
    answer = classify(client)
    stranger = client.delete(f"/feedback/{answer.request_id}", REMOTE_ADDR=OTHER_ADDRESS)
    assert stranger.status_code == 403
    assert stranger.json()["error"]["code"] == "feedback_forbidden"
    response = client.delete(f"/feedback/{answer.request_id}", REMOTE_ADDR=HOME_ADDRESS)
    assert response.status_code == 204
    assert RequestLog.objects.get(request_id=answer.request_id).client_hash == ""


def test_someone_elses_request_is_403_and_an_unknown_one_404(
    classifier_version, alice_client, bob_client
):
    answer = classify(alice_client)
    response = bob_client.delete(f"/feedback/{answer.request_id}")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "feedback_forbidden"
    assert RequestLog.objects.get(request_id=answer.request_id).user is not None
    unknown = bob_client.delete("/feedback/no-such-request")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "request_not_found"


def test_an_image_another_request_still_keeps_stays(classifier_version, feedback_images):
    client = APIClient()
    first, second = classify(client, image=BLUE), classify(client, image=BLUE)
    kept = feedback_with_image(client, first, BLUE)
    feedback_with_image(client, second, BLUE)
    home = {"REMOTE_ADDR": HOME_ADDRESS}
    assert client.delete(f"/feedback/{second.request_id}", **home).status_code == 204
    assert (feedback_images / kept.image).read_bytes() == BLUE
    assert client.delete(f"/feedback/{first.request_id}", **home).status_code == 204
    assert not (feedback_images / kept.image).exists()


def test_the_command_forgets_requests_and_report_no_longer_shows_them(api_client, capsys):
    url = "https://photos.example/private/holiday.jpg"
    row = log_row(url=url, at=timezone.now())
    other = log_row(url="https://photos.example/other.jpg", at=timezone.now())
    urls = [entry["image_url"] for entry in api_client.get("/report").json()["top"]]
    assert url in urls

    call_command("forget_request", row.request_id)
    assert f"{row.request_id}: forgotten" in capsys.readouterr().out
    urls = [entry["image_url"] for entry in api_client.get("/report").json()["top"]]
    assert url not in urls and "https://photos.example/other.jpg" in urls
    assert RequestLog.objects.get(pk=other.pk).image_url == "https://photos.example/other.jpg"


def test_the_command_names_request_ids_it_does_not_know(capsys):
    row = log_row(url="https://photos.example/a.jpg")
    with pytest.raises(CommandError, match="1 request id"):
        call_command("forget_request", "no-such-request", row.request_id)
    captured = capsys.readouterr()
    assert "no-such-request: no such request" in captured.err
    assert RequestLog.objects.get(pk=row.pk).image_url == ""
