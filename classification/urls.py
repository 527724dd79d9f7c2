from django.urls import path

from classification import apis, views

app_name = "classification"

urlpatterns = [
    path("", views.upload_page, name="home"),
    path("classify-image", apis.ClassifyImageApi.as_view(), name="classify-image"),
    path("models", apis.ModelListApi.as_view(), name="models"),
    path("cache-stats", apis.CacheStatsApi.as_view(), name="cache-stats"),
]
