"""Domain errors of image classification, each mapped to the JSON error contract."""

from rest_framework import status

from core.errors import PayloadTooLarge, ServiceError


class InvalidClassificationRequest(ServiceError):
    code = "invalid_request"


class EmptyImage(ServiceError):
    code = "empty_image"
    default_message = "The image is empty."


class ImageTooLarge(PayloadTooLarge):
    code = "image_too_large"
    default_message = "The image is larger than this service accepts."


class TooManyPixels(PayloadTooLarge):
    code = "image_too_many_pixels"
    default_message = "The image has more pixels than this service accepts."


class UnsupportedImageType(ServiceError):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_image_type"
    default_message = "The file is not a JPEG, PNG, GIF or WebP image."


class UndecodableImage(ServiceError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "undecodable_image"
    default_message = "The image could not be decoded; it may be truncated or corrupt."


class UnknownModel(ServiceError):
    code = "unknown_model"
    default_message = "No model with that name is registered."


class ModelNotReady(ServiceError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "model_not_ready"
    default_message = "No model is in production yet; try again shortly."


class ModelRegistrationError(Exception):
    """Registering, converting or fetching a model failed; the message says why and what to do."""


class ArtifactIntegrityError(ModelRegistrationError):
    """A stored artifact's bytes do not match the checksum the registry holds for them."""


# --- Fetching an image_url ----------------------------------------------------------------


class InvalidUrl(ServiceError):
    code = "invalid_url"
    default_message = "The image URL is not an http or https URL this service fetches."


class UrlUnreachable(ServiceError):
    # The same answer for a refused address and a host that does not resolve or connect, so
    # the service tells nobody which internal names exist.
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "url_unreachable"
    default_message = "The image URL cannot be reached from this service."


class UpstreamError(ServiceError):
    status_code = status.HTTP_502_BAD_GATEWAY
    code = "upstream_error"
    default_message = "The image URL's server did not answer with an image."


class TooManyRedirects(UpstreamError):
    code = "too_many_redirects"
    default_message = "The image URL redirected too many times."


class UpstreamTimeout(ServiceError):
    status_code = status.HTTP_504_GATEWAY_TIMEOUT
    code = "upstream_timeout"
    default_message = "The image URL's server did not send the image in time."
