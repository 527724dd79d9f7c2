from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    extend_schema_view,
)
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.serializers import ValidationError
from rest_framework.views import APIView
from rest_framework_simplejwt import serializers as jwt_serializers
from rest_framework_simplejwt import views as jwt_views
from rest_framework_simplejwt.exceptions import TokenError

from accounts import selectors
from accounts.throttling import TokenObtainThrottle
from core.negotiation import FixedContentNegotiation
from core.openapi import error_response as _error


class SecretApi(APIView):
    """Greet the signed-in caller (JWT bearer token or browser session)."""

    permission_classes = [IsAuthenticated]
    content_negotiation_class = FixedContentNegotiation

    @extend_schema(
        operation_id="secret",
        responses={
            (200, "text/plain"): OpenApiResponse(
                response=OpenApiTypes.STR, description="Exactly 'Hi <username>'."
            ),
            401: _error("No credentials, or a token that is expired, malformed or not valid."),
        },
    )
    def get(self, request: Request) -> HttpResponse:
        user = request.user
        assert not isinstance(user, AnonymousUser)  # IsAuthenticated let only signed-in users in
        greeting = selectors.user_greeting(user=user)
        return HttpResponse(greeting, content_type="text/plain; charset=utf-8")


@extend_schema_view(
    post=extend_schema(
        operation_id="token_obtain",
        responses={
            200: jwt_serializers.TokenObtainPairSerializer,
            400: _error("Username or password missing."),
            401: _error("No active account with these credentials."),
            429: _error("Too many attempts from this address; see Retry-After."),
        },
    )
)
class TokenObtainApi(jwt_views.TokenObtainPairView):
    """Exchange a username and password for an access token and a refresh token."""

    throttle_classes = [TokenObtainThrottle]


@extend_schema_view(
    post=extend_schema(
        operation_id="token_refresh",
        responses={
            200: jwt_serializers.TokenRefreshSerializer,
            400: _error("No refresh token given."),
            401: _error("The refresh token is expired, used before (rotated) or not valid."),
        },
    )
)
class TokenRefreshApi(jwt_views.TokenRefreshView):
    """Exchange a refresh token for a new access token and a new refresh token (rotation)."""


@extend_schema_view(
    post=extend_schema(
        operation_id="token_verify",
        responses={
            200: OpenApiResponse(description="The token is valid."),
            400: _error("No token given."),
            401: _error("The token is expired, blacklisted or not valid."),
        },
    )
)
class TokenVerifyApi(jwt_views.TokenVerifyView):
    """Check that a token (access or refresh) is valid."""

    @extend_schema_serializer(component_name="TokenVerify")
    class InputSerializer(jwt_serializers.TokenVerifySerializer):
        def validate(self, attrs: dict) -> dict:
            # simplejwt answers 400 for a blacklisted token here but 401 everywhere else.
            try:
                return super().validate(attrs)
            except ValidationError as exc:
                raise TokenError("Token is blacklisted") from exc

    serializer_class = InputSerializer
