"""Reads of ground truth: accuracy from feedback, and how a shadowed version compares."""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Avg, Count, F, IntegerField, Min, Q, QuerySet
from django.db.models.functions import Cast, Floor, Greatest, Least, TruncDay, TruncHour
from django.utils import timezone

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


def feedback_accuracies(*, model_version: ModelVersion) -> tuple[Proportion, Proportion]:
    """``model_version``'s accuracy from all counted feedback, and from trusted feedback only
    (one query)."""
    trusted = Q(review=Feedback.Review.TRUSTED)
    counts = feedback_counted(model_version=model_version).aggregate(
        n=Count("id"),
        right=Count("id", filter=Q(correct=True)),
        trusted_n=Count("id", filter=trusted),
        trusted_right=Count("id", filter=trusted & Q(correct=True)),
    )
    return (
        Proportion(successes=counts["right"], n=counts["n"]),
        Proportion(successes=counts["trusted_right"], n=counts["trusted_n"]),
    )


def accuracy_warned(accuracy: Proportion) -> bool:
    """Whether ``accuracy`` rests on at least FEEDBACK_MIN_SAMPLES answers and falls below
    FEEDBACK_ACCURACY_WARNING (too little feedback never warns)."""
    value = accuracy.value
    return (
        accuracy.n >= settings.FEEDBACK_MIN_SAMPLES
        and value is not None
        and value < settings.FEEDBACK_ACCURACY_WARNING
    )


@dataclass(frozen=True)
class Confusion:
    """Answers that said ``predicted_label`` where the feedback says ``true_label``."""

    true_label: str
    predicted_label: str
    count: int


def feedback_confusions(
    *, model_version: ModelVersion, trusted_only: bool = False, limit: int = 10
) -> list[Confusion]:
    """The most frequent wrong answers of ``model_version`` (true -> predicted), most first."""
    rows = (
        feedback_counted(model_version=model_version, trusted_only=trusted_only)
        .filter(correct=False)
        .values("label", "predicted_label")
        .annotate(n=Count("id"))
        .order_by("-n", "label", "predicted_label")[:limit]
    )
    return [
        Confusion(true_label=row["label"], predicted_label=row["predicted_label"], count=row["n"])
        for row in rows
    ]


@dataclass(frozen=True)
class ReliabilityBin:
    """Answers whose top-1 confidence fell in [low, high): how sure, and how often right."""

    low: float
    high: float
    n: int
    mean_confidence: float | None
    accuracy: Proportion


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram: equal confidence bins, and the expected calibration error."""

    bins: list[ReliabilityBin]

    @property
    def n(self) -> int:
        return sum(b.n for b in self.bins)

    @property
    def expected_calibration_error(self) -> float | None:
        """Sum over bins of (bin's share of answers) x |observed accuracy - mean confidence|:
        0 for a model whose confidence is its accuracy (``None`` without feedback)."""
        total = self.n
        if not total:
            return None
        return sum(
            b.n / total * abs(b.accuracy.successes / b.n - (b.mean_confidence or 0.0))
            for b in self.bins
            if b.n
        )


def feedback_reliability(
    *, model_version: ModelVersion, trusted_only: bool = False, bins: int = 10
) -> Reliability:
    """``model_version``'s counted feedback in ``bins`` equal confidence bins over [0, 1] (the
    last bin includes 1.0), aggregated by the database in one query."""
    # Confidence 1.0 (and anything out of range) is clamped into the first or last bin.
    index = Least(
        Greatest(Cast(Floor(F("confidence") * bins), IntegerField()), 0),
        bins - 1,
        output_field=IntegerField(),
    )
    rows = (
        feedback_counted(model_version=model_version, trusted_only=trusted_only)
        .annotate(bin=index)
        .values("bin")
        .annotate(
            n=Count("id"),
            right=Count("id", filter=Q(correct=True)),
            mean=Avg("confidence"),
        )
        .order_by("bin")
    )
    by_bin = {row["bin"]: row for row in rows}
    result = []
    for i in range(bins):
        row = by_bin.get(i, {"n": 0, "right": 0, "mean": None})
        result.append(
            ReliabilityBin(
                low=i / bins,
                high=(i + 1) / bins,
                n=row["n"],
                mean_confidence=row["mean"],
                accuracy=Proportion(successes=row["right"], n=row["n"]),
            )
        )
    return Reliability(bins=result)


@dataclass(frozen=True)
class AccuracyPoint:
    """Accuracy of the feedback given in the period starting at ``start``."""

    start: datetime
    accuracy: Proportion


@dataclass(frozen=True)
class AccuracyOverTime:
    period: str  # "hour" or "day"
    points: list[AccuracyPoint]


# Feedback spanning at most this long is shown per hour, longer per day.
HOURLY_SPAN = timedelta(hours=48)


def feedback_accuracy_over_time(
    *,
    model_version: ModelVersion,
    trusted_only: bool = False,
    days: int = 30,
    now: datetime | None = None,
) -> AccuracyOverTime:
    """Accuracy per day of the last ``days`` days (per hour when the feedback in that window
    spans at most HOURLY_SPAN), periods without feedback left out; two queries."""
    until = now or timezone.now()
    feedback = feedback_counted(model_version=model_version, trusted_only=trusted_only).filter(
        created_at__gt=until - timedelta(days=days), created_at__lte=until
    )
    first = feedback.aggregate(first=Min("created_at"))["first"]
    if first is None:
        return AccuracyOverTime(period="day", points=[])
    hourly = until - first <= HOURLY_SPAN
    trunc = TruncHour if hourly else TruncDay
    rows = (
        feedback.annotate(period=trunc("created_at", tzinfo=timezone.get_current_timezone()))
        .values("period")
        .annotate(n=Count("id"), right=Count("id", filter=Q(correct=True)))
        .order_by("period")
    )
    return AccuracyOverTime(
        period="hour" if hourly else "day",
        points=[
            AccuracyPoint(
                start=row["period"], accuracy=Proportion(successes=row["right"], n=row["n"])
            )
            for row in rows
        ],
    )


@dataclass(frozen=True)
class VersionAccuracy:
    """Everything the statistics page shows of one version's live accuracy."""

    model_version: ModelVersion
    accuracy: Proportion  # counted feedback: all but rejected
    trusted_accuracy: Proportion  # trusted feedback only
    confusions: list[Confusion]
    reliability: Reliability
    over_time: AccuracyOverTime

    @property
    def warned(self) -> bool:
        return accuracy_warned(self.accuracy)


def version_accuracy(
    *, model_version: ModelVersion, days: int = 30, now: datetime | None = None
) -> VersionAccuracy:
    """``model_version``'s live accuracy from counted feedback (five queries)."""
    accuracy, trusted = feedback_accuracies(model_version=model_version)
    return VersionAccuracy(
        model_version=model_version,
        accuracy=accuracy,
        trusted_accuracy=trusted,
        confusions=feedback_confusions(model_version=model_version),
        reliability=feedback_reliability(model_version=model_version),
        over_time=feedback_accuracy_over_time(model_version=model_version, days=days, now=now),
    )


def production_versions() -> list[ModelVersion]:
    return list(ModelVersion.objects.filter(stage=ModelVersion.Stage.PRODUCTION).order_by("name"))


@dataclass(frozen=True)
class ShadowedVersion:
    """A shadowed staging version, the production version of its name, and how they compare."""

    model_version: ModelVersion
    production_version: ModelVersion | None
    comparison: ShadowComparison


def shadowed_versions_compare() -> list[ShadowedVersion]:
    """Every staging version shadowed now (a share above 0) or before (shadow predictions),
    each against the production version of its name (two queries, then shadow_comparison's:
    at most three per version)."""
    staging = list(
        ModelVersion.objects.filter(stage=ModelVersion.Stage.STAGING)
        .filter(Q(shadow_share__gt=0) | Q(shadow_predictions__isnull=False))
        .distinct()
        .order_by("name", "-version")
    )
    production = {
        version.name: version
        for version in ModelVersion.objects.filter(
            stage=ModelVersion.Stage.PRODUCTION, name__in={v.name for v in staging}
        )
    }
    return [
        ShadowedVersion(
            model_version=version,
            production_version=production.get(version.name),
            comparison=shadow_comparison(shadow_version=version),
        )
        for version in staging
    ]
