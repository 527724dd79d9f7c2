"""Reads of the request log: /report and the admin statistics."""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Avg, Count, F, Max, Min, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Floor, TruncHour
from django.utils import timezone

from reporting.models import RequestLog

# A "classification": an answered request (cached or not). Errors never count in /report.
_CLASSIFIED = Q(status_code=200)


def _time_range(
    rows: QuerySet[RequestLog], *, since: datetime | None, until: datetime | None
) -> QuerySet[RequestLog]:
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    return rows


def report_top_urls(
    *, since: datetime | None = None, until: datetime | None = None, limit: int = 10
) -> list[dict[str, Any]]:
    """The ``limit`` most classified image URLs in [since, until), in one aggregate query.

    Most requested first; ties go to the URL requested most recently. Cached answers count;
    errors do not. Each entry: image_url, count, min/max/avg_processing_time (seconds).
    """
    rows = _time_range(
        RequestLog.objects.filter(_CLASSIFIED, image_url_key__isnull=False),
        since=since,
        until=until,
    )
    # Grouped by the URL's hash key (the partial index "requestlog_report" covers the whole
    # aggregate, an index-only scan); the URL itself is looked up for the winning groups only.
    url_of_key = (
        RequestLog.objects.filter(_CLASSIFIED, image_url_key=OuterRef("image_url_key"))
        .order_by()
        .values("image_url")[:1]
    )
    top = (
        rows.values("image_url_key")
        .annotate(
            count=Count("*"),
            min_processing_time=Min("processing_time"),
            max_processing_time=Max("processing_time"),
            avg_processing_time=Avg("processing_time"),
            latest=Max("created_at"),
        )
        .order_by("-count", "-latest", "image_url_key")
        .annotate(image_url=Subquery(url_of_key))[:limit]
    )
    return [
        {
            "image_url": entry["image_url"],
            "count": entry["count"],
            "min_processing_time": round(entry["min_processing_time"], 6),
            "max_processing_time": round(entry["max_processing_time"], 6),
            "avg_processing_time": round(entry["avg_processing_time"], 6),
        }
        for entry in top
    ]


# --- Admin statistics ---------------------------------------------------------------------

# Percentiles are computed in Python (the same on SQLite and PostgreSQL) over at most this
# many of the latest answers of each kind.
PERCENTILE_SAMPLE = 20_000


@dataclass
class Statistics:
    since: datetime
    until: datetime
    total: int
    per_hour: list[tuple[datetime, int]]
    answered: int
    cached: int
    cached_by_kind: dict[str, int]
    percentiles: dict[str, dict[str, float | None]]  # "cached"/"uncached" -> p50/p95/p99
    top_labels: list[tuple[str, int]]
    confidence_histogram: list[tuple[str, int]]
    errors: list[tuple[str, int, int]]  # (code, status, count)

    @property
    def cache_hit_rate(self) -> float | None:
        return self.cached / self.answered if self.answered else None


def percentile(values: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (as PostgreSQL's percentile_cont)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def request_statistics(*, days: int = 7, now: datetime | None = None) -> Statistics:
    """Counts, rates, percentiles and histograms of the last ``days`` days of requests."""
    until = now or timezone.now()
    since = (until - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    rows = RequestLog.objects.filter(created_at__gte=since, created_at__lt=until)
    answered_rows = rows.filter(_CLASSIFIED)

    per_hour_counts = dict(
        rows.annotate(hour=TruncHour("created_at"))
        .values("hour")
        .annotate(n=Count("*"))
        .values_list("hour", "n")
    )
    per_hour = []
    hour = since
    while hour < until:
        per_hour.append((hour, per_hour_counts.get(hour, 0)))
        hour += timedelta(hours=1)

    totals = answered_rows.aggregate(
        n_answered=Count("*"),
        n_cached=Count("id", filter=Q(cached=True)),
        n_cached_url=Count("id", filter=Q(cached=True, cache_kind=RequestLog.CacheKind.URL)),
        n_cached_image=Count("id", filter=Q(cached=True, cache_kind=RequestLog.CacheKind.IMAGE)),
    )

    percentiles = {}
    for name, is_cached in (("cached", True), ("uncached", False)):
        sample = list(
            answered_rows.filter(cached=is_cached)
            .order_by("-created_at")
            .values_list("processing_time", flat=True)[:PERCENTILE_SAMPLE]
        )
        percentiles[name] = {
            "p50": percentile(sample, 0.50),
            "p95": percentile(sample, 0.95),
            "p99": percentile(sample, 0.99),
            "n": len(sample),
        }

    top_labels = list(
        answered_rows.exclude(top_label="")
        .values("top_label")
        .annotate(n=Count("*"))
        .order_by("-n", "top_label")
        .values_list("top_label", "n")[:10]
    )

    buckets = [0] * 10
    for bucket, n in (
        answered_rows.filter(confidence__isnull=False)
        .annotate(bucket=Floor(F("confidence") * 10))
        .values("bucket")
        .annotate(n=Count("*"))
        .values_list("bucket", "n")
    ):
        buckets[min(max(int(bucket), 0), 9)] += n
    histogram = [(f"{i / 10:.1f}-{(i + 1) / 10:.1f}", n) for i, n in enumerate(buckets)]

    errors = list(
        rows.exclude(_CLASSIFIED)
        .values("error_code", "status_code")
        .annotate(n=Count("*"))
        .order_by("-n", "error_code")
        .values_list("error_code", "status_code", "n")
    )

    return Statistics(
        since=since,
        until=until,
        total=rows.count(),
        per_hour=per_hour,
        answered=totals["n_answered"],
        cached=totals["n_cached"],
        cached_by_kind={"url": totals["n_cached_url"], "image": totals["n_cached_image"]},
        percentiles=percentiles,
        top_labels=top_labels,
        confidence_histogram=histogram,
        errors=errors,
    )
