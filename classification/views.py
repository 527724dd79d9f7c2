"""The browser upload page. It classifies through the same POST /classify-image as API clients."""

from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_safe

from classification import selectors
from classification.models import ModelVersion

# How many predictions the page asks for and draws as bars.
UPLOAD_PAGE_TOP_K = 5


@dataclass(frozen=True)
class ModelChoice:
    """A production model as the page offers it. Its input size and crop let the script resize a
    large photo before upload to what this model can use (upload.js, "what is sent")."""

    name: str
    kind: str
    num_classes: int
    input_size: int
    crop: float

    @classmethod
    def of(cls, version: ModelVersion) -> "ModelChoice":
        try:
            crop = float((version.preprocessing or {}).get("crop", 1.0))
        except (TypeError, ValueError):
            crop = 1.0  # the server refuses it anyway; the page then sends photos as they are
        return cls(
            name=version.name,
            kind=version.kind,
            num_classes=version.num_classes,
            input_size=version.input_size,
            crop=crop if 0.0 < crop <= 1.0 else 1.0,
        )


def _feedback_url() -> str:
    """POST /feedback, named by the URLconf (classification imports no other app); "" where no
    app routes it, and the page then asks nothing."""
    try:
        return reverse("ground_truth:feedback")
    except NoReverseMatch:
        return ""


@require_safe
@ensure_csrf_cookie
def upload_page(request: HttpRequest) -> HttpResponse:
    models = [ModelChoice.of(version) for version in selectors.model_production_versions()]
    context = {
        "classify_url": reverse("classification:classify-image"),
        "top_k": min(UPLOAD_PAGE_TOP_K, settings.CLASSIFY_MAX_TOP_K),
        "max_bytes": settings.IMAGE_MAX_BYTES,
        # A person may choose among the production models; the default one comes first.
        "models": models,
        # Zero-shot models take labels typed on the page (shown while one is chosen).
        "any_zero_shot": any(model.kind == "zero_shot" for model in models),
        "default_model": selectors.model_default_name(),
        # Staff see a link to the request statistics (an admin page of the reporting app).
        "admin_statistics_url": reverse("admin:reporting_requestlog_statistics"),
        # "Right?" under each answer posts to the ground-truth app's feedback API and reads the
        # answering version's labels from GET /models.
        "feedback_url": _feedback_url(),
        "models_url": reverse("classification:models"),
    }
    return render(request, "classification/upload.html", context)
