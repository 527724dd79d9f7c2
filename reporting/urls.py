from django.urls import path

from reporting import apis

app_name = "reporting"

urlpatterns = [
    path("report", apis.ReportApi.as_view(), name="report"),
]
