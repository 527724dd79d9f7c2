"""Live accuracy from feedback, computed exactly on known rows: accuracy and its Wilson interval,
confusions, reliability bins and calibration error, accuracy over time; rejected feedback never
counts."""

from datetime import UTC, datetime, timedelta

import pytest

from ground_truth.models import Feedback
from ground_truth.selectors import (
    accuracy_warned,
    feedback_accuracies,
    feedback_accuracy,
    feedback_accuracy_over_time,
    feedback_confusions,
    feedback_reliability,
    shadowed_versions_compare,
    version_accuracy,
    wilson_interval,
)
from tests.ground_truth.support_stats import feedback_row, model_version_row, shadow_row

pytestmark = pytest.mark.django_db
TRUSTED, REJECTED = Feedback.Review.TRUSTED, Feedback.Review.REJECTED
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def version():
    return model_version_row()


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0) and round(high, 4) == 0.2775
    low, high = wilson_interval(10, 10)
    assert round(low, 4) == 0.7225 and high == pytest.approx(1.0)
    assert wilson_interval(0, 0) is None


def test_accuracy_counts_all_but_rejected_feedback_and_trusted_beside(version):
    for index in range(8):
        feedback_row(version, review=TRUSTED if index < 3 else Feedback.Review.PENDING)
    feedback_row(version, predicted="cat", label="dog", review=TRUSTED)
    feedback_row(version, predicted="cat", label="fox")
    for _ in range(3):  # wrong, but rejected by staff: not counted
        feedback_row(version, predicted="cat", label="dog", review=REJECTED)

    counted, trusted = feedback_accuracies(model_version=version)
    assert (counted.successes, counted.n, counted.value) == (8, 10, 0.8)
    low, high = counted.interval
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert (trusted.successes, trusted.n) == (3, 4)
    assert feedback_accuracy(model_version=version) == counted
    assert feedback_accuracy(model_version=version, trusted_only=True) == trusted


def test_feedback_of_another_version_does_not_count(version):
    other = model_version_row(version=2, stage="staging")
    feedback_row(version)
    feedback_row(other, predicted="cat", label="dog")
    counted, _ = feedback_accuracies(model_version=version)
    assert (counted.successes, counted.n) == (1, 1)


def test_no_feedback_has_no_accuracy_nor_interval(version):
    counted, trusted = feedback_accuracies(model_version=version)
    assert counted.n == 0 and counted.value is None and counted.interval is None
    assert trusted.n == 0


def test_confusions_are_true_to_predicted_most_first_without_rejected(version):
    for true, predicted, times in [("dog", "cat", 3), ("fox", "cat", 1), ("cat", "dog", 2)]:
        for _ in range(times):
            feedback_row(version, predicted=predicted, label=true)
    for _ in range(5):
        feedback_row(version, predicted="dog", label="fox", review=REJECTED)
    feedback_row(version, predicted="cat")
    feedback_row(version, predicted="fox")

    confusions = feedback_confusions(model_version=version)
    assert [(c.true_label, c.predicted_label, c.count) for c in confusions] == [
        ("dog", "cat", 3),
        ("cat", "dog", 2),
        ("fox", "cat", 1),
    ]
    assert len(feedback_confusions(model_version=version, limit=2)) == 2


def test_reliability_bins_and_expected_calibration_error(version):
    for confidence, right in [(0.95, True), (0.95, True), (0.95, False), (1.0, True)]:
        feedback_row(version, confidence=confidence, label=None if right else "dog")
    feedback_row(version, confidence=0.55)
    feedback_row(version, confidence=0.55, label="fox")
    feedback_row(version, confidence=0.05, label="dog")
    feedback_row(version, confidence=0.35, review=REJECTED)

    reliability = feedback_reliability(model_version=version)
    assert len(reliability.bins) == 10 and reliability.n == 7
    by_low = {round(b.low, 1): b for b in reliability.bins}
    top = by_low[0.9]  # 1.0 falls in the last bin
    assert (top.n, top.accuracy.successes) == (4, 3)
    assert top.mean_confidence == pytest.approx(0.9625)
    middle = by_low[0.5]
    assert (middle.n, middle.accuracy.value) == (2, 0.5)
    assert middle.mean_confidence == pytest.approx(0.55)
    assert (by_low[0.0].n, by_low[0.0].accuracy.value) == (1, 0.0)
    assert by_low[0.3].n == 0 and by_low[0.3].mean_confidence is None  # rejected: not counted
    # 4/7 * |0.75 - 0.9625| + 2/7 * |0.5 - 0.55| + 1/7 * |0 - 0.05| = 1/7
    assert reliability.expected_calibration_error == pytest.approx(1 / 7)


def test_a_calibrated_model_has_no_calibration_error(version):
    for index in range(4):
        feedback_row(version, confidence=0.75, label=None if index else "dog")
    assert feedback_reliability(model_version=version).expected_calibration_error == (
        pytest.approx(0.0)
    )
    assert feedback_reliability(model_version=model_version_row(name="empty")).n == 0


def test_accuracy_per_day_over_a_long_span(version):
    feedback_row(version, at=datetime(2026, 3, 8, 10, 0, tzinfo=UTC))
    feedback_row(version, label="dog", at=datetime(2026, 3, 8, 20, 0, tzinfo=UTC))
    for minute in range(3):
        feedback_row(version, at=datetime(2026, 3, 9, 9, minute, tzinfo=UTC))
    feedback_row(version, label="dog", at=datetime(2026, 3, 9, 9, 30, tzinfo=UTC), review=REJECTED)
    feedback_row(version, label="dog", at=datetime(2026, 3, 1, 9, 0, tzinfo=UTC))  # too old

    over_time = feedback_accuracy_over_time(model_version=version, days=7, now=NOW)
    assert over_time.period == "day"
    assert [(p.start, p.accuracy.successes, p.accuracy.n) for p in over_time.points] == [
        (datetime(2026, 3, 8, tzinfo=UTC), 1, 2),
        (datetime(2026, 3, 9, tzinfo=UTC), 3, 3),
    ]
    wide = feedback_accuracy_over_time(model_version=version, days=30, now=NOW)
    assert [p.accuracy.n for p in wide.points] == [1, 2, 3]


def test_accuracy_per_hour_over_a_short_span(version):
    feedback_row(version, at=NOW - timedelta(minutes=50))
    feedback_row(version, label="dog", at=NOW - timedelta(minutes=10))
    feedback_row(version, at=NOW - timedelta(hours=2, minutes=30))

    over_time = feedback_accuracy_over_time(model_version=version, now=NOW)
    assert over_time.period == "hour"
    points = [(p.start, p.accuracy.successes, p.accuracy.n) for p in over_time.points]
    assert points == [
        (datetime(2026, 3, 10, 9, tzinfo=UTC), 1, 1),
        (datetime(2026, 3, 10, 11, tzinfo=UTC), 1, 2),
    ]
    assert over_time.points[1].accuracy.interval == wilson_interval(1, 2)
    assert feedback_accuracy_over_time(model_version=version, now=NOW + timedelta(days=60)) == (
        feedback_accuracy_over_time(model_version=model_version_row(name="empty"))
    )


def test_the_warning_needs_enough_samples_below_the_threshold(settings, version):
    settings.FEEDBACK_MIN_SAMPLES = 10
    settings.FEEDBACK_ACCURACY_WARNING = 0.85
    for index in range(9):
        feedback_row(version, label=None if index < 7 else "dog")
    counted, _ = feedback_accuracies(model_version=version)
    assert counted.n == 9 and not accuracy_warned(counted)  # 7/9 but too few
    feedback_row(version)
    counted, _ = feedback_accuracies(model_version=version)
    assert counted.value == 0.8 and accuracy_warned(counted)
    settings.FEEDBACK_ACCURACY_WARNING = 0.8
    assert not accuracy_warned(counted)  # at the threshold is not below it


def test_a_versions_figures_take_five_queries(version, django_assert_num_queries):
    for index in range(6):
        feedback_row(version, confidence=0.1 + index * 0.15, label=None if index % 2 else "dog")
    with django_assert_num_queries(5):
        figures = version_accuracy(model_version=version)
    assert figures.accuracy.n == 6 and figures.reliability.n == 6
    assert figures.confusions[0].count == 3 and figures.over_time.points[0].accuracy.n == 6


def test_shadowed_versions_are_compared_in_two_queries_and_at_most_three_each(
    version, django_assert_num_queries
):
    shadowed = model_version_row(version=2, stage="staging", shadow_share=0.5)
    was_shadowed = model_version_row(version=3, stage="staging")
    model_version_row(version=4, stage="staging")  # never shadowed: left out
    model_version_row(name="other", stage="staging", shadow_share=0.2)  # no production version
    right = feedback_row(version)
    shadow_row(
        shadowed,
        request_id=right.request_log.request_id,
        production_label="cat",
        label="dog",
        production=version,
    )
    shadow_row(was_shadowed, request_id="x", production_label="cat", label="cat")

    # Three for a version whose shadowed requests have feedback, two for the others.
    with django_assert_num_queries(2 + 2 + 2 + 3):
        compared = shadowed_versions_compare()
    assert [(c.model_version.name, c.model_version.version) for c in compared] == [
        ("other", 1),
        ("tiny", 3),
        ("tiny", 2),
    ]
    other, three, two = compared
    assert other.production_version is None and three.production_version == version
    assert (two.comparison.shadowed, two.comparison.agreement.value) == (1, 0.0)
    assert (two.comparison.shadow_accuracy.value, two.comparison.production_accuracy.value) == (
        0.0,
        1.0,
    )
    assert three.comparison.agreement.value == 1.0 and three.comparison.shadow_accuracy.n == 0
