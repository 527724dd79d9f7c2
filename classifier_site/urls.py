from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from core import apis

urlpatterns = [
    # Route names in core.middleware.UNOBSERVED_ROUTES: not logged, not counted.
    path("metrics", apis.MetricsApi.as_view(), name="metrics"),
    path("health/live", apis.HealthLiveApi.as_view(), name="health-live"),
    path("health/ready", apis.HealthReadyApi.as_view(), name="health-ready"),
    path("", include("classification.urls")),
    path("", include("accounts.urls")),
    path("", include("reporting.urls")),
    path("", include("ground_truth.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Its script as a file of its own (?script), not inline: the page's CSP allows no inline script.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
]

# Django's error answers outside DRF views, in the API's JSON error shape.
handler400 = "core.errors.bad_request_view"
handler403 = "core.errors.permission_denied_view"
handler404 = "core.errors.not_found_view"
handler500 = "core.errors.server_error_view"
