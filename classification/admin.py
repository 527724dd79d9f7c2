from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from classification.evaluation import evaluation_summary
from classification.models import ModelVersion
from classification.registry import services


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "version",
        "stage",
        "kind",
        "source_format",
        "input_size",
        "num_classes",
        "shadow_share",
        "top1_accuracy",
        "created_at",
        "promoted_at",
    ]
    list_filter = ["name", "stage", "source_format"]
    search_fields = ["name", "source"]
    ordering = ["name", "-version"]
    actions = ["promote", "archive"]
    # Versions are registered by the register_model / fetch_model commands, which convert and
    # check the artifact; the admin changes only their stage, through the actions below, and
    # the share of live traffic a staging version is shadowed on.
    readonly_fields = [
        *(field.name for field in ModelVersion._meta.fields if field.name != "shadow_share"),
        "zero_shot_template",
        "zero_shot_labels",
        "evaluations",
        "fidelity_report",
    ]

    @admin.display(description="Top-1 (latest evaluation)")
    def top1_accuracy(self, obj: ModelVersion) -> str:
        latest = _latest_evaluation(obj)
        return "-" if latest is None else f"{latest.get('top1_accuracy', 0.0):.1%}"

    @admin.display(description="Evaluations on labelled photos")
    def evaluations(self, obj: ModelVersion) -> str:
        # One line per labelled set that evaluate_model measured this version on.
        found = (obj.metrics or {}).get("evaluations") or {}
        return "\n".join(evaluation_summary(figures) for figures in found.values()) or "-"

    @admin.display(description="Zero-shot prompt template")
    def zero_shot_template(self, obj: ModelVersion) -> str:
        return (obj.zero_shot or {}).get("template", "") if obj.kind == "zero_shot" else "-"

    @admin.display(description="Zero-shot labels")
    def zero_shot_labels(self, obj: ModelVersion) -> str:
        # The labels whose prompt embeddings were stored; requests may bring their own.
        return ", ".join(obj.labels) if obj.kind == "zero_shot" else "-"

    @admin.display(description="Fidelity against the float version")
    def fidelity_report(self, obj: ModelVersion) -> str:
        # A quantized version's report (registry/fidelity.py), in words; "-" for the others.
        report = (obj.metrics or {}).get("fidelity")
        if not isinstance(report, dict):
            return "-"
        against = report.get("against", {})
        parts = [
            f"against {against.get('name')} v{against.get('version')} on {report.get('photos')} "
            f"held-out photos ({report.get('photo_set') or 'unnamed'}, "
            f"{report.get('labelled')} labelled)",
            f"top-1 agreement {report.get('top1_agreement')}, where float confidence >= "
            f"{report.get('confident_threshold')}: {report.get('confident_top1_agreement')} "
            f"({report.get('confident_photos')} photos)",
            f"|confidence delta| mean {report.get('mean_abs_confidence_delta')}, "
            f"max {report.get('max_abs_confidence_delta')}",
        ]
        if report.get("labelled"):
            parts.append(
                f"top-1 {report.get('fp32_top1')} -> {report.get('int8_top1')}, "
                f"top-5 {report.get('fp32_top5')} -> {report.get('int8_top5')}"
            )
        rule = report.get("default_rule") or {}
        parts.append(
            "may answer by default"
            if rule.get("passes")
            else "not the default: " + "; ".join(rule.get("reasons", []))
        )
        return "; ".join(parts)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Promote to production (archives the current one)")
    def promote(
        self, request: HttpRequest, queryset: QuerySet[ModelVersion]
    ) -> HttpResponse | None:
        # (A response: ground_truth's admin answers a refused promotion with a page.)
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to promote.", messages.ERROR)
            return None
        model_version = services.model_version_promote(model_version=queryset.get())
        self.message_user(
            request,
            f"{model_version.name} v{model_version.version} is in production; "
            "workers switch within a few seconds.",
            messages.SUCCESS,
        )
        return None

    @admin.action(description="Archive")
    def archive(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        for model_version in queryset:
            services.model_version_archive(model_version=model_version)
        self.message_user(request, f"Archived {queryset.count()} version(s).", messages.SUCCESS)


def _latest_evaluation(model_version: ModelVersion) -> dict | None:
    found = list(((model_version.metrics or {}).get("evaluations") or {}).values())
    return max(found, key=lambda figures: figures.get("evaluated_at", ""), default=None)
