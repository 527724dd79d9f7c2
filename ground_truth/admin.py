from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from classification.admin import ModelVersionAdmin
from classification.models import ModelVersion
from ground_truth.promotion import PromotionRefused, model_version_promote_gated

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
