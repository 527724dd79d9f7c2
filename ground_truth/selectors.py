"""Reads of ground truth: accuracy from feedback, and how a shadowed version compares."""

import math
from dataclasses import dataclass

from django.db.models import Avg, Count, Q, QuerySet

from classification.models import ModelVersion
from ground_truth.models import Feedback, ShadowPrediction

# z for a two-sided 95 % interval.
_Z95 = 1.959963984540054


@dataclass(frozen=True)
class Proportion:
    """``successes`` of ``n``, with the Wilson score 95 % interval (``None`` when n is 0)."""

    successes: int
    n: int

    @property
    def value(self) -> float | None:
        return self.successes / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.successes, self.n)


def wilson_interval(successes: int, n: int, *, z: float = _Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a binomial proportion: honest at small n and near 0 or 1,
    where the normal approximation's interval leaves [0, 1] or collapses to a point."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def feedback_counted(*, model_version: ModelVersion, trusted_only: bool = False) -> QuerySet:
    """The feedback that counts for ``model_version``'s accuracy: all but rejected (or only the
    trusted, where staff review it)."""
    feedback = Feedback.objects.filter(model_version=model_version)
    if trusted_only:
        return feedback.filter(review=Feedback.Review.TRUSTED)
    return feedback.exclude(review=Feedback.Review.REJECTED)


def feedback_accuracy(*, model_version: ModelVersion, trusted_only: bool = False) -> Proportion:
    """Share of ``model_version``'s counted feedback that says its top label was right."""
    counts = feedback_counted(model_version=model_version, trusted_only=trusted_only).aggregate(
        n=Count("id"), right=Count("id", filter=Q(correct=True))
    )
    return Proportion(successes=counts["right"], n=counts["n"])


@dataclass(frozen=True)
class ShadowComparison:
    """A shadowed staging version against the production answers of the same requests."""

    shadowed: int  # requests the shadow answered
    agreement: Proportion  # its top label equal to production's
    mean_latency_seconds: float | None  # the shadow's decode and inference
    # On the shadowed requests that received (counted) feedback: each version's accuracy.
    shadow_accuracy: Proportion
    production_accuracy: Proportion


def shadow_comparison(*, shadow_version: ModelVersion) -> ShadowComparison:
    """How ``shadow_version`` answered live traffic, beside production on the same requests."""
    shadows = ShadowPrediction.objects.filter(shadow_version=shadow_version)
    summary = shadows.aggregate(
        n=Count("id"), agree=Count("id", filter=Q(agrees=True)), latency=Avg("latency_seconds")
    )
    # Feedback on the production answer of a shadowed request says what the right label was;
    # both versions are scored against it.
    judged = (
        Feedback.objects.exclude(review=Feedback.Review.REJECTED)
        .filter(request_log__request_id__in=shadows.values("request_id"))
        .values_list("request_log__request_id", "label")
    )
    truth = dict(judged)
    shadow_right = production_right = 0
    for request_id, label, production_label in shadows.filter(
        request_id__in=list(truth)
    ).values_list("request_id", "label", "production_label"):
        shadow_right += label == truth[request_id]
        production_right += production_label == truth[request_id]
    return ShadowComparison(
        shadowed=summary["n"],
        agreement=Proportion(successes=summary["agree"], n=summary["n"]),
        mean_latency_seconds=summary["latency"],
        shadow_accuracy=Proportion(successes=shadow_right, n=len(truth)),
        production_accuracy=Proportion(successes=production_right, n=len(truth)),
    )
