"""The ground truth gauges at /metrics: each production version's accuracy from counted feedback
with its interval, feedback by verdict, the warning, and shadowed versions' agreement."""

import pytest
from django.db import OperationalError
from prometheus_client.parser import text_string_to_metric_families

from ground_truth import metrics as ground_truth_metrics
from ground_truth.metrics import ground_truth_collector
from ground_truth.models import Feedback
from tests.ground_truth.support_stats import feedback_row, model_version_row, shadow_row

pytestmark = pytest.mark.django_db
TINY = {"model": "tiny", "version": "1"}


@pytest.fixture(autouse=True)
def _fresh_figures(settings):
    settings.MONITORING_METRICS_SECONDS = 0
    ground_truth_collector.reset()
    yield
    ground_truth_collector.reset()


def scrape(api_client) -> dict[tuple, float]:
    """/metrics as {(name, label=value, ...): value} for the ground truth gauges."""
    response = api_client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    return {
        (sample.name, *sorted(f"{k}={v}" for k, v in sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
        if sample.name.startswith(("classifier_feedback", "classifier_shadow_agreement"))
    }


def key(name: str, labels: dict[str, str]) -> tuple:
    return (name, *sorted(f"{k}={v}" for k, v in labels.items()))


def test_accuracy_interval_totals_and_warning_of_a_production_version(settings, api_client):
    settings.FEEDBACK_MIN_SAMPLES = 10
    settings.FEEDBACK_ACCURACY_WARNING = 0.85
    version = model_version_row()
    for index in range(10):
        feedback_row(version, label=None if index < 8 else "dog")
    feedback_row(version, label="dog", review=Feedback.Review.REJECTED)
    model_version_row(version=2, stage="staging")  # not in production: no accuracy gauges

    samples = scrape(api_client)
    assert samples[key("classifier_feedback_accuracy", TINY)] == 0.8
    assert round(samples[key("classifier_feedback_accuracy_lower", TINY)], 4) == 0.4902
    assert round(samples[key("classifier_feedback_accuracy_upper", TINY)], 4) == 0.9433
    assert samples[key("classifier_feedback_total", {**TINY, "verdict": "correct"})] == 8
    assert samples[key("classifier_feedback_total", {**TINY, "verdict": "incorrect"})] == 2
    assert samples[key("classifier_feedback_accuracy_warning", TINY)] == 1
    assert not any("version=2" in name for name in samples)

    settings.FEEDBACK_ACCURACY_WARNING = 0.8
    ground_truth_collector.reset()
    assert scrape(api_client)[key("classifier_feedback_accuracy_warning", TINY)] == 0


def test_a_version_without_feedback_has_totals_but_no_accuracy(api_client):
    model_version_row()
    samples = scrape(api_client)
    assert samples[key("classifier_feedback_total", {**TINY, "verdict": "correct"})] == 0
    assert samples[key("classifier_feedback_accuracy_warning", TINY)] == 0
    assert key("classifier_feedback_accuracy", TINY) not in samples


def test_shadowed_versions_report_their_agreement(api_client):
    production = model_version_row()
    candidate = model_version_row(version=2, stage="staging", shadow_share=0.1)
    for index, label in enumerate(["cat", "cat", "dog", "cat"]):
        shadow_row(
            candidate,
            request_id=f"r{index}",
            production_label="cat",
            label=label,
            production=production,
        )
    samples = scrape(api_client)
    assert samples[key("classifier_shadow_agreement", {"model": "tiny", "version": "2"})] == 0.75


def test_figures_are_reused_for_the_caching_interval(settings, api_client):
    settings.MONITORING_METRICS_SECONDS = 3600
    version = model_version_row()
    feedback_row(version)
    assert scrape(api_client)[key("classifier_feedback_accuracy", TINY)] == 1.0
    feedback_row(version, label="dog")
    assert scrape(api_client)[key("classifier_feedback_accuracy", TINY)] == 1.0  # cached
    ground_truth_collector.reset()
    assert scrape(api_client)[key("classifier_feedback_accuracy", TINY)] == 0.5


def test_a_failing_database_yields_no_samples_and_the_scrape_still_answers(monkeypatch, api_client):
    model_version_row()

    def refused() -> None:
        raise OperationalError("the database is down")

    monkeypatch.setattr(ground_truth_metrics, "_figures", refused)
    samples = scrape(api_client)
    assert samples == {}
    monkeypatch.undo()
    assert scrape(api_client)[key("classifier_feedback_accuracy_warning", TINY)] == 0
