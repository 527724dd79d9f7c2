from datetime import timedelta

import pytest
from django.utils import timezone

from reporting.models import RequestLog
from reporting.selectors import percentile, request_statistics
from tests.support.reporting import log_row

pytestmark = pytest.mark.django_db
STATISTICS = "/admin/reporting/requestlog/statistics/"


@pytest.fixture
def recent_rows():
    now = timezone.now()
    log_row(
        url="https://images.example/a.jpg",
        seconds=0.2,
        at=now - timedelta(hours=1),
        label="cat",
        confidence=0.95,
    )
    log_row(
        url="https://images.example/a.jpg",
        seconds=0.002,
        at=now - timedelta(minutes=5),
        cached=True,
        cache_kind="url",
        label="cat",
        confidence=0.95,
    )
    log_row(seconds=0.4, at=now - timedelta(minutes=3), label="dog", confidence=0.42)
    log_row(seconds=0.01, at=now - timedelta(minutes=2), status=422, error_code="undecodable_image")
    log_row(seconds=0.0, at=now - timedelta(days=30), label="old")  # outside the window


def test_staff_see_the_statistics_with_charts(client, admin_user, recent_rows):
    client.force_login(admin_user)
    response = client.get(STATISTICS)
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" role="img"') == 6
    assert "Cache hit rate: 33.3%" in page
    assert "undecodable_image" in page and "Top labels" in page
    assert 'src="http' not in page and 'href="http' not in page  # nothing from a CDN


def test_non_staff_and_anonymous_users_are_refused(client, django_user_model, recent_rows):
    response = client.get(STATISTICS)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    bob = django_user_model.objects.create_user("bob", password="pw-bob-12345")
    client.force_login(bob)
    response = client.get(STATISTICS)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_staff_without_permission_on_the_log_are_refused(client, django_user_model):
    carol = django_user_model.objects.create_user("carol", password="pw-carol-1234", is_staff=True)
    client.force_login(carol)
    assert client.get(STATISTICS).status_code == 403


def test_statistics_count_what_happened(recent_rows):
    stats = request_statistics(days=7)
    assert stats.total == 4 and stats.answered == 3 and stats.cached == 1
    assert stats.cached_by_kind == {"url": 1, "image": 0}
    assert stats.top_labels == [("cat", 2), ("dog", 1)]
    histogram = dict(stats.confidence_histogram)
    assert histogram["0.9-1.0"] == 2 and histogram["0.4-0.5"] == 1 and sum(histogram.values()) == 3
    assert stats.errors == [("undecodable_image", 422, 1)]
    assert stats.percentiles["cached"]["p50"] == 0.002
    assert stats.percentiles["uncached"]["p50"] == pytest.approx(0.3)
    assert sum(n for _, n in stats.per_hour) == 4


def test_percentiles_interpolate_like_percentile_cont():
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([float(i) for i in range(1, 101)], 0.95) == pytest.approx(95.05)
    assert percentile([], 0.5) is None


def test_the_request_log_is_read_only_with_filters_and_search(client, admin_user, recent_rows):
    client.force_login(admin_user)
    page = client.get("/admin/reporting/requestlog/", {"q": "a.jpg", "cached__exact": "1"})
    assert page.status_code == 200
    assert b"1 result" in page.content or b">1<" in page.content
    row = RequestLog.objects.first()
    assert client.get("/admin/reporting/requestlog/add/").status_code == 403
    change = client.get(f"/admin/reporting/requestlog/{row.pk}/change/")
    assert change.status_code == 200 and b'name="_save"' not in change.content
    for filter_name in ("status_code", "input_kind", "model_name", "created_at"):
        assert filter_name.encode() in client.get("/admin/reporting/requestlog/").content
