"""The one error shape of the API, and the DRF exception handler that produces it.

Every error is ``{"error": {"code": "<snake_case>", "message": "<sentence>"}}``.
Services raise a ``ServiceError`` subclass; nothing else builds error bodies by hand.
"""

import logging
from typing import Any

from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response

from core.logs import request_annotate

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A failure a client can be told about: a status, a stable code and a sentence."""

    # Annotated: DRF's status constants are Literal types, and subclasses set other statuses.
    status_code: int = status.HTTP_400_BAD_REQUEST
    code = "invalid_request"
    default_message = "The request is not valid."

    # Seconds a client should wait before trying again (sent as Retry-After), if it should.
    retry_after: int | None = None

    def __init__(self, message: str | None = None, *, retry_after: int | None = None) -> None:
        self.message = message or self.default_message
        if retry_after is not None:
            self.retry_after = retry_after
        super().__init__(self.message)


class PayloadTooLarge(ServiceError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"
    default_message = "The request body is too large."


class RequestTimeout(ServiceError):
    """The request's body did not arrive within REQUEST_BODY_TIMEOUT (core.front)."""

    status_code = status.HTTP_408_REQUEST_TIMEOUT
    code = "request_timeout"
    default_message = "The request body took too long to arrive."


class ServiceBusy(ServiceError):
    """This process has no capacity for the work right now; the client may retry shortly."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "busy"
    default_message = "The service is busy; try again shortly."
    retry_after = 2


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def _first_message(detail: Any) -> str:
    """The first human sentence inside a DRF error detail (a string, list or dict)."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            text = _first_message(value)
            # 'detail' wraps the sentence itself (simplejwt's token errors), not a field.
            return text if field in ("non_field_errors", "detail") else f"{field}: {text}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


_DRF_CODES: dict[type[drf_exceptions.APIException], str] = {
    drf_exceptions.ValidationError: "invalid_request",
    drf_exceptions.ParseError: "malformed_request",
    drf_exceptions.UnsupportedMediaType: "unsupported_media_type",
    drf_exceptions.NotAuthenticated: "not_authenticated",
    drf_exceptions.AuthenticationFailed: "authentication_failed",
    drf_exceptions.PermissionDenied: "permission_denied",
    drf_exceptions.NotFound: "not_found",
    drf_exceptions.MethodNotAllowed: "method_not_allowed",
    drf_exceptions.NotAcceptable: "not_acceptable",
    drf_exceptions.Throttled: "throttled",
}


def _drf_code(exc: drf_exceptions.APIException) -> str:
    for exc_type in type(exc).__mro__:
        if exc_type in _DRF_CODES:
            return _DRF_CODES[exc_type]
    return "error"


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """The error answer of ``exc`` (None for a bug: Django answers 500); its code also goes on
    the request's access log line, so every refused request is logged with why."""
    response = _error_response(exc)
    request = context.get("request")
    if response is not None and request is not None and isinstance(response.data, dict):
        request_annotate(request, error_code=response.data["error"]["code"])
    return response


def _error_response(exc: Exception) -> Response | None:
    if isinstance(exc, ServiceError):
        response = Response(error_body(exc.code, exc.message), status=exc.status_code)
        if exc.retry_after is not None:
            response["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, RequestDataTooBig):
        too_large = PayloadTooLarge()
        return Response(error_body(too_large.code, too_large.message), status=too_large.status_code)
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        # Django's own limits on a form (DATA_UPLOAD_MAX_NUMBER_FIELDS, ..._FILES): the client
        # sent too much, so a 400 in the API's shape, not an unhandled error.
        return Response(
            error_body("invalid_request", "The form has more fields or files than accepted."),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, SuspiciousOperation):
        return Response(
            error_body("malformed_request", "The request is malformed."),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if not isinstance(exc, drf_exceptions.APIException):
        return None  # a bug: let Django log it and answer 500

    response = Response(
        error_body(_drf_code(exc), _first_message(exc.detail)), status=exc.status_code
    )
    if isinstance(exc, drf_exceptions.Throttled):
        # DRF's Throttled.__init__ sets ``wait``; djangorestframework-stubs do not declare it.
        wait = exc.wait  # type: ignore[attr-defined]
        if wait is not None:
            response["Retry-After"] = str(int(wait) + 1)
    auth_header = getattr(exc, "auth_header", None)
    if auth_header:
        response["WWW-Authenticate"] = auth_header
    return response


# --- Django's own error views, in the same shape ----------------------------------------------
# What Django answers outside DRF (an unknown path, an unknown Host header, a failure no view
# handled) is JSON too: the service has one error shape, whatever refused the request.


def _json_error(status_code: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status_code)


def service_error_response(exc: ServiceError) -> JsonResponse:
    """A ServiceError answered outside DRF (by a middleware), in the API's shape."""
    response = _json_error(exc.status_code, exc.code, exc.message)
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    return response


def bad_request_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    from django.core.exceptions import DisallowedHost

    if isinstance(exception, DisallowedHost):
        return _json_error(400, "unknown_host", "This service does not answer for that host name.")
    return _json_error(400, "malformed_request", "The request is malformed.")


def permission_denied_view(
    request: HttpRequest, exception: Exception | None = None
) -> JsonResponse:
    return _json_error(403, "permission_denied", "You may not do this.")


def not_found_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _json_error(404, "not_found", "There is nothing at this address.")


def server_error_view(request: HttpRequest) -> JsonResponse:
    return _json_error(500, "server_error", "The service failed to answer; try again later.")
