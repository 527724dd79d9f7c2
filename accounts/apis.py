import logging
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ObjectDoesNotExist
from django.core.validators import RegexValidator
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    extend_schema_view,
)
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.serializers import ValidationError
from rest_framework.views import APIView
from rest_framework_simplejwt import serializers as jwt_serializers
from rest_framework_simplejwt import views as jwt_views
from rest_framework_simplejwt.exceptions import TokenError

from accounts import selectors
from accounts.throttling import (
    FailedLoginThrottlingMixin,
    TokenObtainThrottle,
    TokenObtainUserThrottle,
)
from core.negotiation import FixedContentNegotiation
from core.openapi import error_response as _error

logger = logging.getLogger(__name__)


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


# The longest credentials accepted: no account has a longer name (the user table's limit), and
# a longer value is refused (400) before anything reads the database or hashes a password.
USERNAME_MAX_LENGTH = TokenObtainUserThrottle.max_name_length  # 150
PASSWORD_MAX_LENGTH = 255
# Our tokens are about 250 characters; this bounds what a client may make the server parse.
TOKEN_MAX_LENGTH = 2048
# A value that is not blank once trimmed and holds no NUL (which DRF refuses): the schema says
# so, so that what it calls valid is what the endpoint accepts.
_NOT_BLANK = RegexValidator(r"^[^\x00]*[^\s\x00][^\x00]*$", "This field may not be blank.")
_NO_NUL = RegexValidator(r"^[^\x00]*$", "Null characters are not allowed.")
# One answer for every refresh token that does not work, whatever the reason (malformed, badly
# signed, expired, blacklisted, not a refresh token, its user gone or inactive): a token tells
# its holder nothing about the account behind it.
INVALID_REFRESH_MESSAGE = "The refresh token is not valid (expired, used, revoked or malformed)."


def _credential_field(*, max_length: int, trim: bool = True) -> serializers.CharField:
    validators = [_NOT_BLANK if trim else _NO_NUL]
    return serializers.CharField(
        write_only=True, max_length=max_length, trim_whitespace=trim, validators=validators
    )


@extend_schema_view(
    post=extend_schema(
        operation_id="token_obtain",
        responses={
            200: jwt_serializers.TokenObtainPairSerializer,
            400: _error(
                f"Username or password missing, blank, or too long (user name at most "
                f"{USERNAME_MAX_LENGTH} characters, password at most {PASSWORD_MAX_LENGTH})."
            ),
            401: _error("No active account with these credentials."),
            429: _error(
                "Too many failed logins from this address or for this user name; see Retry-After."
            ),
        },
    )
)
class TokenObtainApi(FailedLoginThrottlingMixin, jwt_views.TokenObtainPairView):
    """Exchange a username and password for an access token and a refresh token."""

    throttle_classes = [TokenObtainThrottle, TokenObtainUserThrottle]

    @extend_schema_serializer(component_name="TokenObtainPair")
    class InputSerializer(jwt_serializers.TokenObtainPairSerializer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.fields[self.username_field] = _credential_field(max_length=USERNAME_MAX_LENGTH)
            # A password is used as typed, spaces included (as the admin login does).
            password = _credential_field(max_length=PASSWORD_MAX_LENGTH, trim=False)
            password.style = {"input_type": "password"}
            self.fields["password"] = password

    serializer_class = InputSerializer


@extend_schema_view(
    post=extend_schema(
        operation_id="token_refresh",
        responses={
            200: jwt_serializers.TokenRefreshSerializer,
            400: _error(f"No refresh token given, or one over {TOKEN_MAX_LENGTH} characters."),
            401: _error(
                "The refresh token is not valid: expired, used before (rotated), malformed, not "
                "a refresh token, or its account is gone. One message for every reason."
            ),
        },
    )
)
class TokenRefreshApi(jwt_views.TokenRefreshView):
    """Exchange a refresh token for a new access token and a new refresh token (rotation)."""

    @extend_schema_serializer(component_name="TokenRefresh")
    class InputSerializer(jwt_serializers.TokenRefreshSerializer):
        refresh = serializers.CharField(max_length=TOKEN_MAX_LENGTH, validators=[_NOT_BLANK])

        def validate(self, attrs: dict) -> dict:
            try:
                return super().validate(attrs)
            except (TokenError, AuthenticationFailed, ObjectDoesNotExist) as exc:
                # The reason goes to the debug log only (see INVALID_REFRESH_MESSAGE).
                logger.debug("A refresh token was refused: %s", exc)
                raise AuthenticationFailed(INVALID_REFRESH_MESSAGE, code="token_not_valid") from exc

    serializer_class = InputSerializer


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
        token = serializers.CharField(
            write_only=True, max_length=TOKEN_MAX_LENGTH, validators=[_NOT_BLANK]
        )

        def validate(self, attrs: dict) -> dict:
            # simplejwt answers 400 for a blacklisted token here but 401 everywhere else.
            try:
                return super().validate(attrs)
            except ValidationError as exc:
                raise TokenError("Token is blacklisted") from exc

    serializer_class = InputSerializer
