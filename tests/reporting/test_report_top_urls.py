from datetime import timedelta

import pytest

from reporting.selectors import report_top_urls
from tests.support.reporting import T0, log_row

A, B, C, D = (f"https://images.example/{name}.jpg" for name in "abcd")
pytestmark = pytest.mark.django_db


@pytest.fixture
def known_sequence():
    log_row(url=A, seconds=0.25, at=T0)
    log_row(url=B, seconds=0.1, at=T0 + timedelta(minutes=1))
    log_row(url=A, seconds=0.5, at=T0 + timedelta(minutes=2))
    log_row(
        url=A, seconds=9.0, at=T0 + timedelta(minutes=3), status=422, error_code="undecodable_image"
    )
    log_row(url=C, seconds=0.05, at=T0 + timedelta(minutes=4))
    log_row(url=A, seconds=0.125, at=T0 + timedelta(minutes=5), cached=True, cache_kind="url")
    log_row(url=B, seconds=0.3, at=T0 + timedelta(minutes=6))
    log_row(url=D, seconds=0.2, at=T0 + timedelta(minutes=7))
    log_row(url=C, seconds=0.15, at=T0 + timedelta(minutes=8))
    log_row(seconds=0.01, at=T0 + timedelta(minutes=9))  # an upload: no URL, not in the report
    log_row(url=D, seconds=0.5, at=T0 + timedelta(minutes=10), status=429, error_code="throttled")


def test_report_gives_exact_counts_and_times_most_requested_first(known_sequence):
    assert report_top_urls() == [
        {
            "image_url": A,
            "count": 3,
            "min_processing_time": 0.125,
            "max_processing_time": 0.5,
            "avg_processing_time": 0.291667,
        },
        {
            "image_url": C,
            "count": 2,
            "min_processing_time": 0.05,
            "max_processing_time": 0.15,
            "avg_processing_time": 0.1,
        },
        {
            "image_url": B,
            "count": 2,
            "min_processing_time": 0.1,
            "max_processing_time": 0.3,
            "avg_processing_time": 0.2,
        },
        {
            "image_url": D,
            "count": 1,
            "min_processing_time": 0.2,
            "max_processing_time": 0.2,
            "avg_processing_time": 0.2,
        },
    ]


def test_equal_counts_are_ordered_by_latest_request(known_sequence):
    # B and C both have two answers; C's latest (minute 8) is after B's (minute 6).
    assert [entry["image_url"] for entry in report_top_urls()][1:3] == [C, B]
    log_row(url=B, seconds=0.2, at=T0 + timedelta(minutes=11), status=500, error_code="error")
    assert [entry["image_url"] for entry in report_top_urls()][1:3] == [C, B]
    log_row(url=B, seconds=0.2, at=T0 + timedelta(minutes=12))
    # Now B ties with A at three answers, and B was requested last.
    assert [entry["image_url"] for entry in report_top_urls()] == [B, A, C, D]


def test_errors_are_not_counted(known_sequence):
    top = {entry["image_url"]: entry for entry in report_top_urls()}
    assert top[A]["max_processing_time"] == 0.5  # the 9 s error is left out
    assert top[D]["count"] == 1  # the throttled request is left out


def test_cached_answers_count_as_classifications():
    log_row(url=A, seconds=0.3, at=T0)
    log_row(url=A, seconds=0.001, at=T0 + timedelta(seconds=1), cached=True, cache_kind="url")
    log_row(url=A, seconds=0.002, at=T0 + timedelta(seconds=2), cached=True, cache_kind="image")
    assert report_top_urls()[0]["count"] == 3
    assert report_top_urls()[0]["min_processing_time"] == 0.001


def test_limit_keeps_the_most_requested(known_sequence):
    assert [entry["image_url"] for entry in report_top_urls(limit=2)] == [A, C]
    assert len(report_top_urls(limit=100)) == 4


def test_ten_urls_by_default():
    for i in range(12):
        for _ in range(i + 1):
            log_row(url=f"https://images.example/{i}.png", at=T0 + timedelta(seconds=i))
    top = report_top_urls()
    assert len(top) == 10
    assert top[0] == {
        "image_url": "https://images.example/11.png",
        "count": 12,
        "min_processing_time": 0.1,
        "max_processing_time": 0.1,
        "avg_processing_time": 0.1,
    }


def test_since_is_inclusive_and_until_exclusive(known_sequence):
    top = report_top_urls(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=6))
    assert (
        top
        == [
            {
                "image_url": C,
                "count": 1,
                "min_processing_time": 0.05,
                "max_processing_time": 0.05,
                "avg_processing_time": 0.05,
            },
            {
                "image_url": A,
                "count": 2,
                "min_processing_time": 0.125,
                "max_processing_time": 0.5,
                "avg_processing_time": 0.3125,
            },
        ][::-1]
    )  # A has two answers in the window, C one


def test_a_window_with_nothing_gives_an_empty_list(known_sequence):
    assert report_top_urls(since=T0 + timedelta(days=1)) == []


def test_long_urls_are_reported_whole():
    url = "https://images.example/" + "x" * 5000 + ".jpg"
    log_row(url=url)
    log_row(url=url)
    assert report_top_urls()[0]["image_url"] == url
    assert report_top_urls()[0]["count"] == 2


def test_report_is_one_query(known_sequence, django_assert_num_queries):
    with django_assert_num_queries(1):
        report_top_urls(since=T0, until=T0 + timedelta(hours=1), limit=5)
