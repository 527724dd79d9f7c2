from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from core.admin import ReadOnlyModelAdmin
from reporting import charts, selectors
from reporting.models import ReportCall, RequestLog
from reporting.monitoring.selectors import DISTRIBUTION_NAMES, DISTRIBUTIONS, ModelDrift
from reporting.monitoring.services import model_monitoring_refresh


@admin.register(RequestLog)
class RequestLogAdmin(ReadOnlyModelAdmin):
    list_display = [
        "created_at",
        "input_kind",
        "short_url",
        "top_label",
        "confidence",
        "processing_time",
        "cached",
        "cache_kind",
        "status_code",
        "error_code",
        "model_name",
        "model_version",
    ]
    list_filter = [
        ("created_at", admin.DateFieldListFilter),
        "model_name",
        "cached",
        "cache_kind",
        "status_code",
        "input_kind",
        "error_code",
    ]
    search_fields = ["image_url", "top_label", "request_id", "image_sha256"]
    date_hierarchy = "created_at"
    list_select_related = ["user"]
    show_full_result_count = False  # a COUNT(*) over millions of rows on every page is slow
    change_list_template = "admin/reporting/requestlog/change_list.html"

    @admin.display(description="image URL", ordering="image_url")
    def short_url(self, row: RequestLog) -> str:
        return row.image_url if len(row.image_url) <= 60 else row.image_url[:57] + "..."

    def get_urls(self) -> list[URLPattern]:
        statistics = path(
            "statistics/",
            self.admin_site.admin_view(self.statistics_view),
            name="reporting_requestlog_statistics",
        )
        return [statistics, *super().get_urls()]

    def statistics_view(self, request: HttpRequest) -> HttpResponse:
        """Charts of the last days of requests, for staff who may view the request log."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            days = min(max(int(request.GET.get("days", 7)), 1), 31)
        except ValueError:
            days = 7
        stats = selectors.request_statistics(days=days)
        percentile_names = ["p50", "p95", "p99"]
        context = {
            **self.admin_site.each_context(request),
            "title": "Request statistics",
            "opts": self.model._meta,
            "stats": stats,
            "days": days,
            "day_choices": [1, 7, 14, 30],
            "charts": [
                charts.bar_chart(
                    [(f"{hour:%m-%d %H}h", n) for hour, n in stats.per_hour],
                    title=f"Requests per hour, last {days} day(s)",
                    label_every=max(len(stats.per_hour) // 8, 1),
                ),
                charts.ratio_bar(title="Cache hit rate", fraction=stats.cache_hit_rate),
                charts.bar_chart(
                    [(name, 0) for name in percentile_names],
                    title="Processing time percentiles (seconds)",
                    series=["cached", "uncached"],
                    values=[
                        [stats.percentiles["cached"][p] or 0, stats.percentiles["uncached"][p] or 0]
                        for p in percentile_names
                    ],
                    unit=" s",
                ),
                charts.bar_chart(stats.top_labels, title="Top labels"),
                charts.bar_chart(stats.confidence_histogram, title="Confidence of the top label"),
                charts.bar_chart(
                    [(f"{code or 'none'} ({status})", n) for code, status, n in stats.errors],
                    title="Errors by code",
                ),
            ],
            "monitoring": _monitoring_context(model_monitoring_refresh()),
            "monitoring_window_minutes": settings.MONITORING_WINDOW_MINUTES,
            "psi_notice": settings.MONITORING_PSI_NOTICE,
            "psi_warning": settings.MONITORING_PSI_WARNING,
            "min_requests": settings.MONITORING_MIN_REQUESTS,
            "reference_requests": settings.MONITORING_REFERENCE_REQUESTS,
        }
        return TemplateResponse(request, "admin/reporting/statistics.html", context)


def _psi_reading(value: float | None) -> str:
    if value is None:
        return "no data"
    if value >= settings.MONITORING_PSI_WARNING:
        return "significant shift"
    if value >= settings.MONITORING_PSI_NOTICE:
        return "moderate shift"
    return "stable"


def _monitoring_context(drifts: list[ModelDrift]) -> list[dict[str, Any]]:
    """Per production model: the comparison, its table rows and a reference-vs-recent chart."""
    sections = []
    for drift in drifts:
        reference = drift.reference or {}
        ref_means = reference.get("means", {})
        rows = [
            (
                DISTRIBUTION_NAMES[name],
                drift.psi[name],
                _psi_reading(drift.psi[name]),
            )
            for name in DISTRIBUTIONS
        ]
        labels = drift.label_rows()
        sections.append(
            {
                "drift": drift,
                "psi_rows": rows,
                # Multi-task versions: (tag, reference rate, recent rate, PSI, reading).
                "tag_rows": [
                    (tag, ref, recent, value, _psi_reading(value))
                    for tag, ref, recent, value in drift.tag_rows()
                ],
                "means": [
                    (
                        "mean brightness (0-255)",
                        ref_means.get("brightness"),
                        drift.recent_means["brightness"],
                    ),
                    ("mean width (px)", ref_means.get("width"), drift.recent_means["width"]),
                    ("mean height (px)", ref_means.get("height"), drift.recent_means["height"]),
                ],
                "chart": charts.bar_chart(
                    [(label, 0) for label, _, _ in labels],
                    title=f"{drift.model_name} v{drift.model_version}: share of answers by label",
                    series=["reference", "recent"],
                    values=[[ref * 100, recent * 100] for _, ref, recent in labels],
                    unit=" %",
                )
                if drift.reference and labels
                else None,
            }
        )
    return sections


@admin.register(ReportCall)
class ReportCallAdmin(ReadOnlyModelAdmin):
    list_display = ["created_at", "document_id", "since", "until", "limit", "user", "exported_at"]
    list_filter = [("created_at", admin.DateFieldListFilter)]
