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
