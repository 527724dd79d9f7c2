import json
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from classification.models import ModelVersion
from reporting.management.commands._common import iso_datetime
from reporting.monitoring.selectors import (
    DISTRIBUTION_NAMES,
    DISTRIBUTIONS,
    ModelDrift,
    model_drift_compare,
    monitoring_window,
)
from reporting.monitoring.services import reference_profiles_ensure


class Command(BaseCommand):
    help = (
        "Compare a model version's answers in a time range with its reference profile: "
        "population stability indexes, low-confidence share, input statistics, warnings."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", required=True, help="The model name.")
        parser.add_argument(
            "--model-version",
            type=int,
            dest="model_version",
            help="The version (default: the one in production).",
        )
        parser.add_argument(
            "--since",
            type=iso_datetime,
            help="ISO 8601 start (default: MONITORING_WINDOW_MINUTES before --until).",
        )
        parser.add_argument(
            "--until", type=iso_datetime, help="ISO 8601 end, exclusive (default: now)."
        )
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print JSON instead of a table."
        )

    def handle(
        self,
        *args: object,
        model: str,
        model_version: int | None,
        since: datetime | None,
        until: datetime | None,
        as_json: bool,
        **options: object,
    ) -> None:
        versions = ModelVersion.objects.filter(name=model)
        if model_version is not None:
            chosen = versions.filter(version=model_version).first()
        else:
            chosen = versions.filter(stage=ModelVersion.Stage.PRODUCTION).first()
        if chosen is None:
            which = (
                f"version {model_version}" if model_version is not None else "production version"
            )
            raise CommandError(f"{model!r} has no {which}.")
        default_since, default_until = monitoring_window(now=until or timezone.now())
        since, until = since or default_since, until or default_until
        if since >= until:
            raise CommandError("--since must be before --until.")
        reference_profiles_ensure(model_versions=[chosen])
        (report,) = model_drift_compare(model_versions=[chosen], since=since, until=until)
        if as_json:
            self.stdout.write(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
        else:
            self.stdout.write(table(report))


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(report: ModelDrift) -> str:
    """The comparison as readable text."""
    reference = report.reference or {}
    lines = [
        f"Model {report.model_name} v{report.model_version}: answers from "
        f"{report.since:%Y-%m-%d %H:%M:%S} to {report.until:%Y-%m-%d %H:%M:%S} UTC",
        (
            f"Reference: {reference['description']}, {reference['count']} answers "
            f"(built {reference['built_at'][:19]})"
            if reference
            else "Reference: none yet (give reference images to 'manage.py model_profile', "
            "or wait for MONITORING_REFERENCE_REQUESTS answers)"
        ),
        f"Recent:    {report.recent_count} answers",
        "",
        f"{'measure':<34}{'reference':>12}{'recent':>12}{'PSI':>9}",
    ]
    ref_means = reference.get("means", {})
    shown = {
        "labels": ("", ""),
        "confidence": ("", ""),
        "brightness": (
            _number(ref_means.get("brightness")),
            _number(report.recent_means.get("brightness")),
        ),
        "image_size": (_size(ref_means), _size(report.recent_means)),
    }
    for name in DISTRIBUTIONS:
        ref, recent = shown[name]
        lines.append(
            f"{DISTRIBUTION_NAMES[name]:<34}{ref:>12}{recent:>12}{_number(report.psi[name], 3):>9}"
        )
    lines.append(
        f"{'low-confidence share (< ' + format(report.low_confidence_threshold, 'g') + ')':<34}"
        f"{_share(report.reference_low_confidence_share):>12}"
        f"{_share(report.recent_low_confidence_share):>12}{'':>9}"
    )
    lines += ["", f"{'label':<34}{'reference':>12}{'recent':>12}"]
    for label, ref_share, recent_share in report.label_rows():
        name = label[:33] or "(none)"
        lines.append(f"{name:<34}{_share(ref_share):>12}{_share(recent_share):>12}")
    if report.tag_labels:
        lines += [
            "",
            f"{'tag (share of answers present)':<34}{'reference':>12}{'recent':>12}{'PSI':>9}",
        ]
        for tag, ref_rate, recent_rate, value in report.tag_rows():
            lines.append(
                f"{tag[:33]:<34}{_share(ref_rate):>12}{_share(recent_rate):>12}"
                f"{_number(value, 3):>9}"
            )
    lines.append("")
    status_text = {
        "no_reference": "no reference profile yet: nothing to compare with",
        "too_few_requests": "too few answers in this range to judge",
        "ok": "ok: no threshold crossed",
        "notice": "notice",
        "warning": "WARNING",
    }[report.status]
    lines.append(f"Status: {status_text}")
    lines += [f"  {finding.level.upper()}: {finding.message}" for finding in report.findings]
    return "\n".join(lines)


def _size(means: dict) -> str:
    width, height = means.get("width"), means.get("height")
    if width is None or height is None:
        return "-"
    return f"{width:.0f}x{height:.0f}"
