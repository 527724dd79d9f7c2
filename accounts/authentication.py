"""Bearer tokens for API clients: simplejwt's authentication, with one answer for every token
that does not authenticate.

simplejwt says why a token failed ("User not found", "User is inactive", which part of the
header is wrong): a token holder learns from it whether an account still exists. Every
failure here is the same 401 with the same sentence; the reason goes to the debug log only.
"""

import logging

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication

logger = logging.getLogger(__name__)

INVALID_TOKEN_MESSAGE = "Given token not valid for any token type"  # noqa: S105 (a sentence)


class UniformJWTAuthentication(JWTAuthentication):
    def authenticate(self, request: Request) -> tuple[object, object] | None:  # type: ignore[override]
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed as exc:
            logger.debug("A bearer token was refused: %s", exc.detail)
            raise exceptions.AuthenticationFailed(
                INVALID_TOKEN_MESSAGE, code="token_not_valid"
            ) from exc


class UniformJWTScheme(SimpleJWTScheme):
    """The OpenAPI security scheme of UniformJWTAuthentication: simplejwt's bearer scheme."""

    target_class = "accounts.authentication.UniformJWTAuthentication"
