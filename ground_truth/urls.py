from django.urls import path, re_path

from ground_truth import apis

app_name = "ground_truth"

urlpatterns = [
    path("feedback", apis.FeedbackApi.as_view(), name="feedback"),
    re_path(
        rf"^feedback/(?P<request_id>{apis.REQUEST_ID_PATTERN})$",
        apis.FeedbackForgetApi.as_view(),
        name="feedback-forget",
    ),
]
