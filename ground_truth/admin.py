from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from classification.admin import ModelVersionAdmin
from classification.models import ModelVersion
from core.admin import ReadOnlyModelAdmin
from ground_truth import services
from ground_truth.models import Feedback, PromotionDecision, ShadowPrediction
from ground_truth.promotion import PromotionRefused, model_version_promote_gated


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    """Staff review what callers said: trusted feedback is what accuracy and training count."""

    list_display = [
        "request_id",
        "model_version",
        "predicted_label",
        "label",
        "correct",
        "confidence",
        "review",
        "created_at",
    ]
    list_filter = ["model_version", "correct", "review", "label"]
    search_fields = ["request_log__request_id", "label"]
    list_select_related = ["request_log", "model_version"]
    date_hierarchy = "created_at"
    actions = ["mark_trusted", "mark_rejected"]
    # What the caller said and what the model answered is evidence: staff judge it, never edit it.
    readonly_fields = [
        "request_log",
        "model_version",
        "caller",
        "user",
        "correct",
        "predicted_label",
        "confidence",
        "label",
        "predicted_tags",
        "tags",
        "image",
        "image_expires_at",
        "reviewed_by",
        "reviewed_at",
        "created_at",
        "updated_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # feedback comes from callers only

    @admin.display(description="request id", ordering="request_log__request_id")
    def request_id(self, feedback: Feedback) -> str:
        return feedback.request_log.request_id

    def save_model(self, request: HttpRequest, obj: Feedback, form: Any, change: bool) -> None:
        # The review is the only field staff change: recorded as the actions record it.
        services.feedback_review(feedback_ids=[obj.pk], review=obj.review, reviewer=request.user)

    def _review(self, request: HttpRequest, queryset: QuerySet[Feedback], review: str) -> None:
        count = services.feedback_review(
            feedback_ids=list(queryset.values_list("id", flat=True)),
            review=review,
            reviewer=request.user,
        )
        self.message_user(request, f"{count} feedback marked {review}.", messages.SUCCESS)

    @admin.action(description="Mark selected feedback trusted", permissions=["change"])
    def mark_trusted(self, request: HttpRequest, queryset: QuerySet[Feedback]) -> None:
        self._review(request, queryset, Feedback.Review.TRUSTED)

    @admin.action(description="Mark selected feedback rejected", permissions=["change"])
    def mark_rejected(self, request: HttpRequest, queryset: QuerySet[Feedback]) -> None:
        self._review(request, queryset, Feedback.Review.REJECTED)


@admin.register(ShadowPrediction)
class ShadowPredictionAdmin(ReadOnlyModelAdmin):
    list_display = [
        "request_id",
        "shadow_version",
        "production_version",
        "production_label",
        "label",
        "agrees",
        "confidence",
        "latency_seconds",
        "created_at",
    ]
    list_filter = ["shadow_version", "agrees"]
    search_fields = ["request_id", "label", "production_label"]
    list_select_related = ["shadow_version", "production_version"]
    date_hierarchy = "created_at"


@admin.register(PromotionDecision)
class PromotionDecisionAdmin(ReadOnlyModelAdmin):
    list_display = ["model_version", "allowed", "forced", "decided_by", "created_at"]
    list_filter = ["allowed", "forced", "model_version"]
    list_select_related = ["model_version"]


# The registry's admin, promoting through the gate. Here and not in classification, which may
# not know ground truth: this app replaces the registration classification made.
admin.site.unregister(ModelVersion)


@admin.register(ModelVersion)
class GatedModelVersionAdmin(ModelVersionAdmin):
    @admin.action(description="Promote to production (archives the current one)")
    def promote(
        self, request: HttpRequest, queryset: QuerySet[ModelVersion]
    ) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to promote.", messages.ERROR)
            return None
        model_version = queryset.get()
        # The confirmation page posts the action again with force=yes.
        force = request.POST.get("force") == "yes"
        try:
            decision = model_version_promote_gated(
                model_version=model_version, force=force, decided_by=request.user.get_username()
            )
        except PromotionRefused as refused:
            context = {
                **self.admin_site.each_context(request),
                "title": f"Promote {model_version.name} v{model_version.version}?",
                "opts": self.model._meta,
                "model_version": model_version,
                "gate": refused.gate,
            }
            return TemplateResponse(request, "admin/ground_truth/promotion_refused.html", context)
        forced = " (forced past the gate)" if decision.forced else ""
        self.message_user(
            request,
            f"{model_version.name} v{model_version.version} is in production{forced}; "
            "workers switch within a few seconds.",
            messages.WARNING if decision.forced else messages.SUCCESS,
        )
        return None
