"""The admin's ground truth statistics page: live accuracy of each production version from
feedback, and shadowed staging versions beside production.

Its own module (GroundTruthConfig.ready() imports it), so the feedback admin in ``admin.py``
stays about feedback. The page hangs on the ``Statistics`` proxy of Feedback, which lists it in
the admin index.
"""

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from ground_truth import selectors
from ground_truth.models import Statistics
from reporting import charts

DAY_CHOICES = [1, 7, 30, 90]


@admin.register(Statistics)
class StatisticsAdmin(admin.ModelAdmin):
    """Read-only: staff who may view feedback see the page; nobody adds or changes anything."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("ground_truth.view_feedback")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            days = min(max(int(request.GET.get("days", 30)), 1), 365)
        except ValueError:
            days = 30
        versions = [
            selectors.version_accuracy(model_version=version, days=days)
            for version in selectors.production_versions()
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Ground truth statistics",
            "opts": self.model._meta,
            "days": days,
            "day_choices": DAY_CHOICES,
            "sections": [_version_section(item) for item in versions],
            "shadowed": selectors.shadowed_versions_compare(),
            "min_samples": settings.FEEDBACK_MIN_SAMPLES,
            "accuracy_warning": settings.FEEDBACK_ACCURACY_WARNING,
        }
        return TemplateResponse(request, "admin/ground_truth/statistics.html", context)


def _version_section(item: selectors.VersionAccuracy) -> dict[str, Any]:
    """One production version: its figures, and its reliability and over-time charts."""
    version = item.model_version
    name = f"{version.name} v{version.version}"
    periods = item.over_time.points
    period_format = "%m-%d %Hh" if item.over_time.period == "hour" else "%Y-%m-%d"
    return {
        "item": item,
        "name": name,
        "populations": [("counted", item.accuracy), ("trusted only", item.trusted_accuracy)],
        "over_time_rows": [(point.start.strftime(period_format), point) for point in periods],
        "reliability_chart": charts.bar_chart(
            [(f"{b.low:.1f}-{b.high:.1f}", 0) for b in item.reliability.bins],
            title=f"{name}: confidence against observed accuracy",
            series=["mean confidence", "observed accuracy"],
            values=[
                [(b.mean_confidence or 0) * 100, (b.accuracy.value or 0) * 100]
                for b in item.reliability.bins
            ],
            unit=" %",
        )
        if item.reliability.n
        else None,
        "over_time_chart": charts.bar_chart(
            [
                (point.start.strftime(period_format), (point.accuracy.value or 0) * 100)
                for point in periods
            ],
            title=f"{name}: accuracy per {item.over_time.period}",
            unit=" %",
            label_every=max(len(periods) // 8, 1),
        )
        if periods
        else None,
    }
