"""Comparing recent traffic with each version's reference profile (reads)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import reduce
from operator import or_
from typing import Any

from django.conf import settings
from django.db.models import Avg, BigIntegerField, Count, F, Q, QuerySet
from django.db.models.functions import Cast
from django.utils import timezone

from classification.models import ModelVersion
from reporting.models import RequestLog
from reporting.monitoring import drift

# Distributions compared with the PSI, in the order they are shown.
DISTRIBUTIONS = ["labels", "confidence", "brightness", "image_size"]
DISTRIBUTION_NAMES = {
    "labels": "label distribution",
    "confidence": "top-1 confidence distribution",
    "brightness": "image brightness",
    "image_size": "image size",
}


@dataclass
class Finding:
    level: str  # "notice" or "warning"
    message: str


@dataclass
class ModelDrift:
    """Recent answers of one model version compared with its reference profile."""

    model_name: str
    model_version: int
    since: datetime
    until: datetime
    reference: dict | None
    recent_count: int
    recent_labels: dict[str, int]
    recent_bins: dict[str, list[int]]
    recent_means: dict[str, float | None]
    low_confidence_threshold: float
    recent_low_confidence_share: float | None
    reference_low_confidence_share: float | None
    psi: dict[str, float | None] = field(default_factory=dict)
    # Multi-task versions only (empty otherwise): the version's tag labels, how many recent
    # answers had tags, per tag how many had it present, and the PSI of each tag's rate.
    tag_labels: list[str] = field(default_factory=list)
    recent_tag_answers: int = 0
    recent_tags: dict[str, int] = field(default_factory=dict)
    tag_psi: dict[str, float | None] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    status: str = "ok"  # no_reference, too_few_requests, ok, notice, warning

    @property
    def warnings(self) -> list[str]:
        return [f.message for f in self.findings if f.level == "warning"]

    @property
    def alert_level(self) -> int:
        """0 nothing to say (or nothing to judge yet), 1 notice, 2 warning: for metrics."""
        return {"notice": 1, "warning": 2}.get(self.status, 0)

    def label_rows(self, limit: int = 12) -> list[tuple[str, float, float]]:
        """(label, reference share, recent share), the most frequent on either side first."""
        reference = drift.shares((self.reference or {}).get("labels", {}))
        recent = drift.shares(self.recent_labels)
        assert isinstance(reference, dict) and isinstance(recent, dict)
        keys = sorted(
            set(reference) | set(recent),
            key=lambda k: (-max(reference.get(k, 0.0), recent.get(k, 0.0)), k),
        )
        return [(k, reference.get(k, 0.0), recent.get(k, 0.0)) for k in keys[:limit]]

    def tag_rows(self) -> list[tuple[str, float | None, float | None, float | None]]:
        """(tag, reference rate, recent rate, PSI) per tag label, in the model's tag order.

        A rate is the share of answers with the tag present; None when that side has no
        answers with tags (or the reference profile predates tag monitoring).
        """
        reference = (self.reference or {}).get("tags") or {}
        ref_answers = reference.get("answers", 0)
        ref_present = reference.get("present", {})
        return [
            (
                label,
                ref_present.get(label, 0) / ref_answers if ref_answers else None,
                (
                    self.recent_tags.get(label, 0) / self.recent_tag_answers
                    if self.recent_tag_answers
                    else None
                ),
                self.tag_psi.get(label),
            )
            for label in self.tag_labels
        ]

    def as_dict(self) -> dict[str, Any]:
        reference = self.reference or {}
        return {
            "model": {"name": self.model_name, "version": self.model_version},
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "status": self.status,
            "reference": (
                {
                    "source": reference.get("source"),
                    "description": reference.get("description"),
                    "built_at": reference.get("built_at"),
                    "count": reference.get("count"),
                    "means": reference.get("means"),
                }
                if self.reference
                else None
            ),
            "recent": {"count": self.recent_count, "means": self.recent_means},
            "psi": {k: _round(v) for k, v in self.psi.items()},
            "low_confidence": {
                "threshold": self.low_confidence_threshold,
                "recent_share": _round(self.recent_low_confidence_share),
                "reference_share": _round(self.reference_low_confidence_share),
            },
            "labels": [
                {"label": label, "reference_share": _round(ref), "recent_share": _round(rec)}
                for label, ref, rec in self.label_rows()
            ],
            "tags": [
                {
                    "label": label,
                    "reference_rate": _round(ref),
                    "recent_rate": _round(rec),
                    "psi": _round(value),
                }
                for label, ref, rec, value in self.tag_rows()
            ],
            "recent_tag_answers": self.recent_tag_answers,
            "findings": [{"level": f.level, "message": f.message} for f in self.findings],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def model_version_answers(name: str, version: int) -> QuerySet[RequestLog]:
    return RequestLog.objects.filter(status_code=200, model_name=name, model_version=version)


def _bin_counts(column: str | Any, edges: Sequence[float], prefix: str) -> dict[str, Count]:
    """One filtered COUNT per bin of ``edges`` over ``column`` (NULLs in no bin)."""
    counts = {}
    for i in range(len(edges) + 1):
        condition = Q(**{f"{column}__isnull": False})
        if i > 0:
            condition &= Q(**{f"{column}__gte": edges[i - 1]})
        if i < len(edges):
            condition &= Q(**{f"{column}__lt": edges[i]})
        counts[f"{prefix}{i}"] = Count("id", filter=condition)
    return counts


def model_drift_compare(
    *,
    model_versions: Sequence[ModelVersion],
    since: datetime,
    until: datetime,
) -> list[ModelDrift]:
    """Compare the answers of each of ``model_versions`` in [since, until) with its reference.

    Two queries whatever the number of versions (one for the fixed bins, counts, means and
    tag rates, one for the labels); none when ``model_versions`` is empty.
    """
    if not model_versions:
        return []
    threshold = settings.MONITORING_LOW_CONFIDENCE
    rows = RequestLog.objects.filter(
        reduce(or_, (Q(model_name=m.name, model_version=m.version) for m in model_versions)),
        status_code=200,
        created_at__gte=since,
        created_at__lt=until,
    )
    bins: dict[str, tuple[str, Sequence[float]]] = {
        "confidence": ("confidence", drift.CONFIDENCE_EDGES),
        "brightness": ("image_brightness", drift.BRIGHTNESS_EDGES),
        "image_size": ("pixels", drift.IMAGE_SIZE_EDGES),
    }
    aggregates: dict[str, Any] = {
        "n": Count("id"),
        "low": Count("id", filter=Q(confidence__lt=threshold)),
        "mean_width": Avg("image_width"),
        "mean_height": Avg("image_height"),
        "mean_brightness": Avg("image_brightness"),
    }
    for name, (column, edges) in bins.items():
        aggregates.update(_bin_counts(column, edges, f"{name}_"))
    # The log keeps a multi-task answer's tags in the version's tag-label order, so position i
    # is the same tag for every answer of one version: one COUNT per position serves every
    # version, whatever its labels are called.
    tag_positions = max(len(m.tag_labels or []) for m in model_versions)
    if tag_positions:
        aggregates["tagged"] = Count("id", filter=Q(tags__isnull=False))
        for i in range(tag_positions):
            aggregates[f"tag_{i}"] = Count("id", filter=Q(**{f"tags__{i}__present": True}))
    # One row of aggregates per version: counts, bin counts and means under dynamic names.
    totals: dict[tuple[str, int | None], Mapping[str, Any]] = {
        (entry["model_name"], entry["model_version"]): entry
        for entry in rows.annotate(
            # A bigint product: width * height of two integers could overflow on PostgreSQL.
            pixels=Cast("image_width", BigIntegerField()) * F("image_height")
        )
        .values("model_name", "model_version")
        .annotate(**aggregates)
        .order_by()
    }
    labels: dict[tuple[str, int | None], dict[str, int]] = {}
    for name, version, label, n in (
        rows.values("model_name", "model_version", "top_label")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("model_name", "model_version", "top_label", "n")
    ):
        labels.setdefault((name, version), {})[label] = n

    report = []
    for model_version in model_versions:
        key = (model_version.name, model_version.version)
        entry = totals.get(key, {})
        count = entry.get("n", 0)
        recent_bins = {
            name: [entry.get(f"{name}_{i}", 0) for i in range(len(edges) + 1)]
            for name, (_, edges) in bins.items()
        }
        reference = model_version.reference_profile
        tag_labels = list(model_version.tag_labels or [])
        item = ModelDrift(
            model_name=model_version.name,
            model_version=model_version.version,
            since=since,
            until=until,
            reference=reference,
            recent_count=count,
            recent_labels=labels.get(key, {}),
            recent_bins=recent_bins,
            recent_means={
                "width": _round(entry.get("mean_width")),
                "height": _round(entry.get("mean_height")),
                "brightness": _round(entry.get("mean_brightness")),
            },
            low_confidence_threshold=threshold,
            recent_low_confidence_share=entry["low"] / count if count else None,
            reference_low_confidence_share=(
                drift.share_below(reference.get("confidence_sample", []), threshold)
                if reference
                else None
            ),
            tag_labels=tag_labels,
            recent_tag_answers=entry.get("tagged", 0) if tag_labels else 0,
            recent_tags=(
                {label: entry.get(f"tag_{i}", 0) for i, label in enumerate(tag_labels)}
                if tag_labels
                else {}
            ),
        )
        _judge(item)
        report.append(item)
    return report


def _judge(item: ModelDrift) -> None:
    """Fill in the PSI figures, the findings and the status of ``item``."""
    reference = item.reference
    if not reference:
        item.psi = dict.fromkeys(DISTRIBUTIONS)
        item.tag_psi = dict.fromkeys(item.tag_labels)
        item.status = "no_reference"
        return
    item.psi = {
        "labels": drift.psi(reference.get("labels", {}), item.recent_labels),
        **{
            name: drift.psi(reference.get(name, []), item.recent_bins[name])
            for name in ("confidence", "brightness", "image_size")
        },
    }
    reference_tags = reference.get("tags") or {}
    item.tag_psi = {
        label: (
            drift.tag_rate_psi(
                reference_present=reference_tags.get("present", {}).get(label, 0),
                reference_answers=reference_tags.get("answers", 0),
                recent_present=item.recent_tags.get(label, 0),
                recent_answers=item.recent_tag_answers,
            )
            if reference_tags
            else None
        )
        for label in item.tag_labels
    }
    if item.recent_count < settings.MONITORING_MIN_REQUESTS:
        item.status = "too_few_requests"
        return
    who = f"{item.model_name} v{item.model_version}"
    for name in DISTRIBUTIONS:
        value = item.psi[name]
        if value is None:
            continue
        if value >= settings.MONITORING_PSI_WARNING:
            item.findings.append(
                Finding(
                    "warning",
                    f"{who}: the {DISTRIBUTION_NAMES[name]} has shifted from the reference "
                    f"(PSI {value:.2f} ≥ {settings.MONITORING_PSI_WARNING:g}).",
                )
            )
        elif value >= settings.MONITORING_PSI_NOTICE:
            item.findings.append(
                Finding(
                    "notice",
                    f"{who}: the {DISTRIBUTION_NAMES[name]} has moved a little from the "
                    f"reference (PSI {value:.2f} ≥ {settings.MONITORING_PSI_NOTICE:g}).",
                )
            )
    if item.recent_tag_answers >= settings.MONITORING_MIN_REQUESTS:
        for label, ref_rate, recent_rate, value in item.tag_rows():
            if value is None or value < settings.MONITORING_PSI_NOTICE:
                continue
            warning = value >= settings.MONITORING_PSI_WARNING
            bar = settings.MONITORING_PSI_WARNING if warning else settings.MONITORING_PSI_NOTICE
            item.findings.append(
                Finding(
                    "warning" if warning else "notice",
                    f"{who}: the rate of the tag {label!r} has "
                    f"{'shifted' if warning else 'moved a little'} from the reference: "
                    f"{recent_rate:.0%} of answers against {ref_rate:.0%} (PSI {value:.2f} "
                    f"≥ {bar:g}).",
                )
            )
    recent, expected = item.recent_low_confidence_share, item.reference_low_confidence_share
    if (
        recent is not None
        and expected is not None
        and recent - expected >= settings.MONITORING_LOW_CONFIDENCE_RISE
    ):
        item.findings.append(
            Finding(
                "warning",
                f"{who}: {recent:.0%} of answers have a confidence below "
                f"{item.low_confidence_threshold:g}, against {expected:.0%} in the reference.",
            )
        )
    levels = {f.level for f in item.findings}
    item.status = "warning" if "warning" in levels else "notice" if levels else "ok"


def monitoring_window(*, now: datetime | None = None) -> tuple[datetime, datetime]:
    until = now or timezone.now()
    return until - timedelta(minutes=settings.MONITORING_WINDOW_MINUTES), until


def model_drift_current(*, now: datetime | None = None) -> list[ModelDrift]:
    """Every production version's last MONITORING_WINDOW_MINUTES compared with its reference.

    Three queries (the production versions, then model_drift_compare's two).
    """
    since, until = monitoring_window(now=now)
    versions = list(
        ModelVersion.objects.filter(stage=ModelVersion.Stage.PRODUCTION).order_by("name")
    )
    return model_drift_compare(model_versions=versions, since=since, until=until)
