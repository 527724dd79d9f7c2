"""The browser upload page. It classifies through the same POST /classify-image as API clients."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_safe

from classification import selectors

# How many predictions the page asks for and draws as bars.
UPLOAD_PAGE_TOP_K = 5


@require_safe
@ensure_csrf_cookie
def upload_page(request: HttpRequest) -> HttpResponse:
    models = list(selectors.model_production_versions())
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
    }
    return render(request, "classification/upload.html", context)
