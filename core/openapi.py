"""OpenAPI pieces shared by every app's endpoints."""

from drf_spectacular.utils import OpenApiResponse, extend_schema_serializer
from rest_framework import serializers


@extend_schema_serializer(component_name="ErrorDetail")
class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable snake_case code, e.g. unsupported_image_type.")
    message = serializers.CharField(help_text="A sentence for a person.")


@extend_schema_serializer(component_name="Error")
class ErrorSerializer(serializers.Serializer):
    """The one error shape of the API (core/errors.py renders it)."""

    error = ErrorDetailSerializer()


def error_response(description: str) -> OpenApiResponse:
    """A documented error answer: the JSON error shape, with when it happens."""
    return OpenApiResponse(response=ErrorSerializer, description=description)


# Request components whose body must carry exactly one of some fields: serializers validate
# that in code, which drf-spectacular cannot see, so a postprocessing hook adds the oneOf.
_exactly_one_of: dict[str, list[str]] = {}


def schema_exactly_one_of_register(*, component: str, fields: list[str]) -> None:
    """Say in the schema that a body of ``component`` has exactly one of ``fields``."""
    _exactly_one_of[component] = list(fields)


def schema_exactly_one_of_hook(result: dict, generator: object, **kwargs: object) -> dict:
    """drf-spectacular postprocessing hook: the registered oneOf constraints."""
    schemas = result.get("components", {}).get("schemas", {})
    for component, fields in _exactly_one_of.items():
        if component in schemas:
            schemas[component]["oneOf"] = [{"required": [field]} for field in fields]
    return result
