"""The feedback admin: staff filter and search feedback and mark it trusted or rejected;
shadow predictions and promotion decisions are read-only."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from ground_truth.models import Feedback, PromotionDecision, ShadowPrediction
from tests.ground_truth.conftest import BLUE, RED, classify, give_feedback

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/ground_truth/feedback/"


@pytest.fixture
def two_feedback(classifier_version) -> list[Feedback]:
    client = APIClient()
    for image in (RED, BLUE):
        answer = classify(client, image=image)
        assert give_feedback(client, request_id=answer.request_id, correct=True).status_code == 201
    return list(Feedback.objects.order_by("id"))


def test_the_list_filters_and_searches(admin_client, two_feedback):
    first, second = two_feedback
    page = admin_client.get(CHANGELIST)
    assert page.status_code == 200
    text = page.content.decode()
    assert first.request_log.request_id in text and second.request_log.request_id in text
    for query in (
        "review__exact=pending",
        "correct__exact=1",
        f"model_version__id__exact={first.model_version_id}",
    ):
        assert admin_client.get(f"{CHANGELIST}?{query}").status_code == 200
    found = admin_client.get(CHANGELIST, {"q": first.request_log.request_id}).content.decode()
    assert first.request_log.request_id in found
    assert second.request_log.request_id not in found


@pytest.mark.parametrize(
    "action, review", [("mark_trusted", "trusted"), ("mark_rejected", "rejected")]
)
def test_review_actions_record_who_and_when(admin_client, admin_user, two_feedback, action, review):
    first, second = two_feedback
    response = admin_client.post(
        CHANGELIST, {"action": action, "_selected_action": [first.pk]}, follow=True
    )
    assert response.status_code == 200
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.review, first.reviewed_by, first.reviewed_at is not None) == (
        review,
        admin_user,
        True,
    )
    assert (second.review, second.reviewed_by) == ("pending", None)


def test_what_the_caller_said_cannot_be_changed(admin_client, two_feedback):
    first = two_feedback[0]
    url = f"{CHANGELIST}{first.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'name="label"' not in page and 'name="correct"' not in page
    assert 'name="review"' in page
    admin_client.post(url, {"review": "trusted", "label": "mauve", "correct": "off"})
    first.refresh_from_db()
    assert (first.review, first.label, first.correct) == ("trusted", first.predicted_label, True)
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403


def test_shadow_predictions_and_promotion_decisions_are_read_only(admin_client, classifier_version):
    shadow = ShadowPrediction.objects.create(
        request_id="r-1",
        shadow_version=classifier_version,
        production_label="red",
        production_confidence=0.9,
        label="blue",
        confidence=0.6,
        agrees=False,
        latency_seconds=0.02,
    )
    decision = PromotionDecision.objects.create(
        model_version=classifier_version, allowed=False, evidence={"shadowed": 3}
    )
    for model, row in (("shadowprediction", shadow), ("promotiondecision", decision)):
        base = f"/admin/ground_truth/{model}/"
        assert admin_client.get(base).status_code == 200
        assert admin_client.get(f"{base}add/").status_code == 403
        assert 'name="_save"' not in admin_client.get(f"{base}{row.pk}/change/").content.decode()
        assert admin_client.post(f"{base}{row.pk}/delete/").status_code == 403
