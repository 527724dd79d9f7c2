from datetime import timedelta

import pytest

from reporting.models import ReportCall
from tests.support.reporting import T0, log_row

pytestmark = pytest.mark.django_db
URL = "https://images.example/cat.jpg"


@pytest.fixture
def rows():
    log_row(url=URL, seconds=0.004, at=T0)
    log_row(url=URL, seconds=0.412, at=T0 + timedelta(minutes=1))
    log_row(url=URL, seconds=0.004, at=T0 + timedelta(minutes=2), cached=True, cache_kind="url")


def test_report_answers_in_the_documented_shape(api_client, rows):
    response = api_client.get("/report")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"generated_at", "since", "until", "top"}
    assert body["since"] is None and body["until"] is None
    assert body["top"] == [
        {
            "image_url": URL,
            "count": 3,
            "min_processing_time": 0.004,
            "max_processing_time": 0.412,
            "avg_processing_time": 0.14,
        }
    ]


def test_report_echoes_its_time_window(api_client, rows):
    response = api_client.get(
        "/report", {"since": "2026-03-01T12:01:00Z", "until": "2026-03-01T13:00:00+00:00"}
    )
    body = response.json()
    assert body["since"] == "2026-03-01T12:01:00Z" and body["until"] == "2026-03-01T13:00:00Z"
    assert body["top"][0]["count"] == 2


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"until": "2026-13-01"},
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"},
    ],
)
def test_bad_parameters_are_a_400_json_error(api_client, params):
    response = api_client.get("/report", params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_since_equal_to_until_is_an_empty_window_not_an_error(api_client, rows):
    response = api_client.get(
        "/report", {"since": "2026-03-01T12:00:00Z", "until": "2026-03-01T12:00:00Z"}
    )
    assert response.status_code == 200
    assert response.json()["top"] == []


def test_limit_is_applied(api_client, rows):
    log_row(url="https://images.example/dog.jpg", at=T0)
    assert len(api_client.get("/report", {"limit": 1}).json()["top"]) == 1
    assert len(api_client.get("/report", {"limit": 100}).json()["top"]) == 2


def test_report_is_one_query_without_elasticsearch(api_client, rows, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert api_client.get("/report").status_code == 200
    assert ReportCall.objects.count() == 0


def test_with_elasticsearch_a_report_is_also_kept_for_export(
    api_client, rows, settings, django_assert_num_queries
):
    settings.ELASTICSEARCH_URL = "http://127.0.0.1:9"  # nothing is sent in this test
    settings.ELASTICSEARCH_EXPORT_IN_WORKERS = False
    with django_assert_num_queries(2):  # the aggregate and the outbox row
        body = api_client.get("/report", {"limit": 5}).json()
    call = ReportCall.objects.get()
    assert call.top == body["top"] and call.limit == 5 and call.exported_at is None


def test_report_is_open_to_anonymous_callers(api_client):
    assert api_client.get("/report").status_code == 200
