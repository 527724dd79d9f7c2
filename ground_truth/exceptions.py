"""Domain errors of ground truth, each mapped to the JSON error contract (core/errors.py)."""

from rest_framework import status

from core.errors import ServiceError


class InvalidFeedback(ServiceError):
    code = "invalid_request"


class RequestNotFound(ServiceError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "request_not_found"
    default_message = "No answered request matches."


class FeedbackForbidden(ServiceError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "feedback_forbidden"
    default_message = "This request is not yours to give feedback on."


class RequestNotAnswered(ServiceError):
    code = "request_not_answered"
    default_message = "The request was refused, so there is no answer to judge."


class UnknownLabel(ServiceError):
    code = "unknown_label"
    default_message = "The model has no such label."


class ImageMismatch(ServiceError):
    code = "image_mismatch"
    default_message = "The image sent is not the image of the request."
