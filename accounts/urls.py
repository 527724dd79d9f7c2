from django.urls import path

from accounts import apis

app_name = "accounts"

urlpatterns = [
    path("api/token/", apis.TokenObtainApi.as_view(), name="token-obtain"),
    path("api/token/refresh/", apis.TokenRefreshApi.as_view(), name="token-refresh"),
    path("api/token/verify/", apis.TokenVerifyApi.as_view(), name="token-verify"),
    path("secret", apis.SecretApi.as_view(), name="secret"),
]
