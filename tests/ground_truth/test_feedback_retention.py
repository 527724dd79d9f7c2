"""`manage.py feedback_retention`: images kept with feedback go once past their expiry."""

import base64
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from ground_truth.models import Feedback
from tests.ground_truth.conftest import BLUE, RED, classify, give_feedback

pytestmark = pytest.mark.django_db


def kept(client, image: bytes) -> Feedback:
    answer = classify(client, image=image)
    response = give_feedback(
        client,
        request_id=answer.request_id,
        correct=True,
        image_base64=base64.b64encode(image).decode(),
    )
    assert response.status_code == 201, response.json()
    return Feedback.objects.get(id=response.json()["id"])


def test_expired_images_are_deleted_and_the_others_kept(
    classifier_version, feedback_images, capsys
):
    client = APIClient()
    old, recent = kept(client, RED), kept(client, BLUE)
    old_file = feedback_images / old.image
    Feedback.objects.filter(pk=old.pk).update(image_expires_at=timezone.now() - timedelta(1))

    call_command("feedback_retention")
    assert "1 feedback image(s) expired, 1 file(s) deleted." in capsys.readouterr().out
    old.refresh_from_db()
    recent.refresh_from_db()
    assert (old.image, old.image_expires_at) == ("", None)
    assert not old_file.exists()
    assert (feedback_images / recent.image).read_bytes() == BLUE
    assert recent.image_expires_at > timezone.now()
    # The feedback itself stays: only the image had a deadline.
    assert Feedback.objects.count() == 2


def test_a_file_another_feedback_keeps_stays_until_that_one_expires(
    classifier_version, feedback_images
):
    client = APIClient()
    first, second = kept(client, RED), kept(client, RED)
    assert first.image == second.image
    Feedback.objects.filter(pk=first.pk).update(image_expires_at=timezone.now() - timedelta(1))
    call_command("feedback_retention")
    assert (feedback_images / second.image).exists()
    Feedback.objects.filter(pk=second.pk).update(image_expires_at=timezone.now() - timedelta(1))
    call_command("feedback_retention")
    assert not (feedback_images / second.image).exists()
