"""OpenAPI pieces shared by every app's endpoints."""

from drf_spectacular.utils import OpenApiResponse, extend_schema_serializer
from rest_framework import serializers


@extend_schema_serializer(component_name="ErrorDetail")
class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable snake_case code, e.g. unsupported_image_type.")
    message = serializers.CharField(help_text="A sentence for a person.")


@extend_schema_serializer(component_name="Error")
class ErrorSerializer(serializers.Serializer):
    """The one error shape of the API (classifier_site/errors.py renders it)."""

    error = ErrorDetailSerializer()


def error_response(description: str) -> OpenApiResponse:
    """A documented error answer: the JSON error shape, with when it happens."""
    return OpenApiResponse(response=ErrorSerializer, description=description)
