from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from classifier_site import apis

urlpatterns = [
    # Route names in classifier_site.middleware.UNOBSERVED_ROUTES: not logged, not counted.
    path("metrics", apis.MetricsApi.as_view(), name="metrics"),
    path("health/live", apis.HealthLiveApi.as_view(), name="health-live"),
    path("health/ready", apis.HealthReadyApi.as_view(), name="health-ready"),
    path("", include("classification.urls")),
    path("", include("accounts.urls")),
    path("", include("reporting.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]

# Django's error answers outside DRF views, in the API's JSON error shape.
handler400 = "classifier_site.errors.bad_request_view"
handler403 = "classifier_site.errors.permission_denied_view"
handler404 = "classifier_site.errors.not_found_view"
handler500 = "classifier_site.errors.server_error_view"
