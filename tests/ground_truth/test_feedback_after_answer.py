"""Feedback sent right after its answer, while the answer's log row still waits in the log
writer's queue (web workers write the request log off the request thread, in batches)."""

import pytest
from rest_framework.test import APIClient

from ground_truth.models import Feedback
from reporting.log_writer import request_log_writer
from reporting.models import RequestLog
from tests.ground_truth.conftest import classify, give_feedback

# The writer thread has its own database connection: it must see committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lingering_writer(settings, tmp_path):
    """This process's log writer running, holding rows far longer than a feedback waits (30 s)
    unless flushed."""
    settings.REQUEST_LOG_QUEUE = True
    settings.REQUEST_LOG_LINGER_SECONDS = 30.0
    settings.REQUEST_LOG_SPILL_DIR = tmp_path / "spill"
    writer = request_log_writer()
    writer.start()
    yield writer
    writer.stop(timeout=5)


def test_feedback_right_after_the_answer_finds_its_queued_row(classifier_version, lingering_writer):
    client = APIClient()
    answer = classify(client)
    assert not RequestLog.objects.filter(request_id=answer.request_id).exists()
    assert len(lingering_writer) == 1  # queued, lingering for a batch
    response = give_feedback(client, request_id=answer.request_id, correct=True)
    assert response.status_code == 201, response.json()
    assert Feedback.objects.get().request_log.request_id == answer.request_id
    assert len(lingering_writer) == 0


def test_flush_writes_the_queue_at_once_and_says_when_it_is_empty(
    classifier_version, lingering_writer
):
    client = APIClient()
    ids = [classify(client).request_id for _ in range(3)]
    assert lingering_writer.flush(timeout=5) is True
    assert RequestLog.objects.filter(request_id__in=ids).count() == 3
    assert lingering_writer.flush(timeout=0) is True  # nothing queued
