"""The admin's ground truth statistics page: staff see each production version's accuracy from
feedback with its interval, confusions, reliability and accuracy over time, the warning at its
threshold, and shadowed staging versions beside production; others are refused."""

import re

import pytest
from django.contrib.auth.models import Permission

from ground_truth.models import Feedback
from tests.ground_truth.support_stats import feedback_row, model_version_row, shadow_row

pytestmark = pytest.mark.django_db
PAGE = "/admin/ground_truth/statistics/"
CHART = '<svg xmlns="http://www.w3.org/2000/svg" role="img"'


def html(response) -> str:
    """The page, without the whitespace between tags (so rows read as one string)."""
    return re.sub(r">\s+<", "><", response.content.decode())


@pytest.fixture
def production():
    """tiny v1 in production: 8 of 10 counted answers right, 3 trusted; one rejected."""
    version = model_version_row()
    for index in range(8):
        feedback_row(version, confidence=0.9, review="trusted" if index < 3 else "pending")
    feedback_row(version, predicted="cat", label="dog", confidence=0.6)
    feedback_row(version, predicted="cat", label="dog", confidence=0.3)
    feedback_row(version, predicted="fox", label="kangaroo", review=Feedback.Review.REJECTED)
    return version


def test_staff_see_accuracy_interval_confusions_and_charts(admin_client, production):
    response = admin_client.get(PAGE)
    assert response.status_code == 200
    page = html(response)
    assert "tiny v1 (production)" in page
    assert "<td>10</td><td>8</td>" in page and "<td>0.800</td>" in page  # counted
    assert "0.490 to 0.943" in page  # its Wilson interval
    assert "<td>3</td><td>3</td>" in page  # trusted only
    assert '<th scope="row">dog</th><td>cat</td><td>2</td>' in page
    assert "kangaroo" not in page  # rejected feedback is not counted
    assert page.count(CHART) == 2  # reliability, accuracy over time
    assert "confidence against observed accuracy" in page and "accuracy per hour" in page
    assert 'src="http' not in page and 'href="http' not in page


def test_the_page_is_in_the_admin_index_and_linked_from_the_request_statistics(admin_client):
    assert f'href="{PAGE}"' in admin_client.get("/admin/").content.decode()
    statistics = admin_client.get("/admin/reporting/requestlog/statistics/").content.decode()
    assert f'href="{PAGE}"' in statistics


def test_anonymous_and_non_staff_users_are_refused(client, django_user_model, production):
    response = client.get(PAGE)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(django_user_model.objects.create_user("bob", password="pw-bob-12345"))
    response = client.get(PAGE)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_staff_need_the_permission_to_view_feedback(client, django_user_model, production):
    carol = django_user_model.objects.create_user("carol", password="pw-carol-123", is_staff=True)
    client.force_login(carol)
    assert client.get(PAGE).status_code == 403
    carol.user_permissions.add(Permission.objects.get(codename="view_feedback"))
    client.force_login(django_user_model.objects.get(pk=carol.pk))
    assert client.get(PAGE).status_code == 200


def test_the_warning_appears_from_enough_samples_below_the_threshold(
    settings, admin_client, production
):
    settings.FEEDBACK_ACCURACY_WARNING = 0.85
    settings.FEEDBACK_MIN_SAMPLES = 11
    assert 'role="alert"' not in html(admin_client.get(PAGE))  # 10 < 11 samples
    settings.FEEDBACK_MIN_SAMPLES = 10
    page = html(admin_client.get(PAGE))
    assert 'role="alert"' in page
    assert "Accuracy of tiny v1 is 0.800 on 10 counted feedback, below 0.85." in page
    settings.FEEDBACK_ACCURACY_WARNING = 0.8
    assert 'role="alert"' not in html(admin_client.get(PAGE))  # not below 0.8


def test_shadowed_versions_are_shown_beside_production(admin_client, production):
    candidate = model_version_row(version=2, stage="staging", shadow_share=0.25)
    model_version_row(version=3, stage="staging")  # neither shadowed nor ever was
    logs = list(
        Feedback.objects.filter(review="pending", correct=True).select_related("request_log")[:3]
    )
    # Three shadowed requests with feedback (all said "cat", right), one without.
    shadow_row(
        candidate,
        request_id=logs[0].request_log.request_id,
        production_label="cat",
        label="cat",
        production=production,
        latency=0.01,
    )
    shadow_row(
        candidate,
        request_id=logs[1].request_log.request_id,
        production_label="cat",
        label="dog",
        production=production,
        latency=0.03,
    )
    shadow_row(
        candidate,
        request_id=logs[2].request_log.request_id,
        production_label="cat",
        label="cat",
        production=production,
        latency=0.02,
    )
    shadow_row(
        candidate,
        request_id="no-feedback",
        production_label="cat",
        label="cat",
        production=production,
        latency=0.04,
    )

    page = html(admin_client.get(PAGE))
    row = page[page.index("tiny v2 against v1") :]
    row = row[: row.index("</tr>")]
    assert "<td>25 %</td><td>4</td>" in row
    assert "<td>0.750 (0.301 to 0.954)</td>" in row  # agreement 3/4 and its interval
    assert "<td>0.0250</td>" in row  # mean latency
    assert "<td>3</td><td>0.667 (0.208 to 0.939)</td><td>1.000 (0.439 to 1.000)</td>" in row
    assert "tiny v3" not in page


def test_no_production_model_and_no_shadow(admin_client):
    page = html(admin_client.get(PAGE))
    assert "No model is in production." in page and "No staging version is shadowed." in page


@pytest.mark.parametrize("days", ["x", "-3", "100000"])
def test_a_bad_day_count_is_clamped_not_an_error(admin_client, production, days):
    assert admin_client.get(PAGE, {"days": days}).status_code == 200
