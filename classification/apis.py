import base64
import binascii
import threading
from typing import Any

from django.conf import settings
from django.utils.functional import cached_property
from drf_spectacular.utils import (
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.utils import html
from rest_framework.utils.serializer_helpers import BindingDict
from rest_framework.views import APIView

from accounts.throttling import CLASSIFY_THROTTLES, DeferredThrottlingMixin
from classification import selectors
from classification.exceptions import EmptyImage, ImageTooLarge, InvalidClassificationRequest
from classification.models import ModelVersion
from classification.results import ClassificationResult, ImageSource
from classification.serving import services
from classification.signals import AnswerSignalMixin
from core.middleware import request_elapsed
from core.openapi import error_response

# Per-request labels of zero-shot models: bounded so that one request embeds at most this much.
ZERO_SHOT_MAX_LABELS = 100
ZERO_SHOT_LABEL_MAX_CHARS = 300


# In the schema: not blank (blank is an empty image, refused with 400 empty_image).
@extend_schema_field({"type": "string", "minLength": 1, "pattern": r"\S"})
class Base64ImageField(serializers.CharField):
    """Base64 image bytes; a ``data:image/...;base64,`` prefix is accepted and dropped."""

    def __init__(self, *, required: bool | None = None, help_text: str | None = None) -> None:
        super().__init__(required=required, help_text=help_text, trim_whitespace=True)

    def get_value(self, dictionary: Any) -> Any:
        # A form field sent blank is blank, not absent (DRF skips it unless allow_blank).
        if html.is_html_input(dictionary) and dictionary.get(self.field_name) == "":
            return ""
        return super().get_value(dictionary)

    def run_validation(self, data: Any = empty) -> Any:
        # Blank is an empty image (the serializer answers empty_image, as for an empty upload),
        # not a field error; the schema says blank is refused (allow_blank stays off for it).
        if isinstance(data, str) and not data.strip():
            return b""
        return super().run_validation(data)

    # A CharField on the wire, bytes once valid: the stubs type a CharField's value as str only,
    # and its input as str although DRF's CharField takes (and refuses) any primitive.
    def to_internal_value(self, data: object) -> bytes:  # type: ignore[override]
        text = super().to_internal_value(data)  # type: ignore[arg-type]
        if text.startswith("data:") and "," in text:
            text = text.split(",", 1)[1]
        if len(text) > settings.IMAGE_MAX_BYTES * 4 // 3 + 4:
            raise ImageTooLarge(f"The image is larger than {settings.IMAGE_MAX_BYTES:,} bytes.")
        try:
            image_bytes = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise serializers.ValidationError("This is not valid base64.") from exc
        if len(image_bytes) > settings.IMAGE_MAX_BYTES:
            raise ImageTooLarge(f"The image is larger than {settings.IMAGE_MAX_BYTES:,} bytes.")
        return image_bytes


class StrictCharField(serializers.CharField):
    """A string and only a string: DRF's CharField would turn 42 into "42"."""

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class LabelListField(serializers.ListField):
    """A list of label texts whose errors name the label, counting from 1 as people do."""

    def run_child_validation(self, data: list) -> list:
        labels = []
        for number, item in enumerate(data, start=1):
            try:
                labels.append(self.child.run_validation(item))
            except serializers.ValidationError as exc:
                detail = exc.detail[0] if isinstance(exc.detail, list) else exc.detail
                raise serializers.ValidationError(f"label {number}: {detail}") from exc
        return labels


class ThreadReusedFieldsMixin:
    """A serializer whose fields are built once per thread instead of once per instance.

    Kept because DRF's deep copy of the fields is a large share of a cache hit's CPU
    (docs/performance.md, "What was tried"). DRF copies them so that an instance may change
    its own; this one never does. Per thread, because a bound field points at the
    serializer that uses it (``parent``, through which it finds the context): each new
    instance takes them over, and lets them go once validated, so that no thread keeps its last
    request's data (an upload's bytes) alive until its next request.
    """

    _fields_by_thread = threading.local()

    @cached_property
    def fields(self) -> BindingDict:
        built: dict[str, BindingDict] = self._fields_by_thread.__dict__
        key = f"{type(self).__module__}.{type(self).__qualname__}"
        fields = built.get(key)
        if fields is None:
            fields = built[key] = super().fields  # type: ignore[misc]
        else:
            for field in fields.values():
                field.parent = self  # type: ignore[assignment]  # a Serializer, by the class it is mixed into
        return fields

    def is_valid(self, *, raise_exception: bool = False) -> bool:
        try:
            return super().is_valid(raise_exception=raise_exception)  # type: ignore[misc]
        finally:
            # validated_data and errors are computed: the fields need this instance no more.
            fields = self.fields
            fields.serializer = None  # type: ignore[assignment]
            for field in fields.values():
                field.parent = None  # type: ignore[assignment]


class ClassifyImageApi(DeferredThrottlingMixin, AnswerSignalMixin, APIView):
    """Classify one image given by URL, as an upload or as base64 bytes."""

    permission_classes = [AllowAny]
    throttle_classes = CLASSIFY_THROTTLES

    @extend_schema_serializer(component_name="ClassifyImageRequest")
    class InputSerializer(ThreadReusedFieldsMixin, serializers.Serializer):
        # Empty images pass here so that every transport answers the same empty_image.
        image = serializers.FileField(
            required=False, allow_empty_file=True, help_text="The image file (multipart)."
        )
        image_base64 = Base64ImageField(required=False, help_text="The image bytes, base64.")
        image_url = StrictCharField(
            required=False,
            allow_blank=True,  # the fetcher answers invalid_url, like any other bad URL
            trim_whitespace=False,
            help_text="An http(s) URL of the image, fetched by the service.",
        )
        top_k = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=settings.CLASSIFY_MAX_TOP_K,
            help_text=(
                f"How many predictions; default {settings.CLASSIFY_DEFAULT_TOP_K}, "
                "2 for a multi-task model."
            ),
        )
        model = serializers.SlugField(required=False, help_text="A registered model name.")
        labels = LabelListField(
            child=StrictCharField(max_length=ZERO_SHOT_LABEL_MAX_CHARS),
            required=False,
            allow_empty=False,
            max_length=ZERO_SHOT_MAX_LABELS,
            help_text=(
                f"Zero-shot models only: classify against these labels (1-{ZERO_SHOT_MAX_LABELS} "
                f"texts of at most {ZERO_SHOT_LABEL_MAX_CHARS} characters, each at most 77 "
                "tokens in the model's prompt) instead of the model's own. In multipart "
                "forms, one 'labels' field per label."
            ),
        )

        def validate(self, attrs: dict) -> dict:
            # An empty form field (top_k=, model=) is not a value: DRF would skip it silently.
            for name in ("top_k", "model"):
                if self.initial_data.get(name) == "":
                    raise serializers.ValidationError({name: "This value may not be empty."})
            given = [key for key in ("image", "image_base64", "image_url") if key in attrs]
            if len(given) != 1:
                raise InvalidClassificationRequest(
                    "Send exactly one image: 'image_url', an 'image' upload or 'image_base64'."
                )
            upload = attrs.pop("image", None)
            if upload is not None:
                if upload.size == 0:
                    raise EmptyImage()
                attrs["source"] = ImageSource(kind="upload", data=upload.read())
            elif "image_base64" in attrs:
                image_bytes = attrs.pop("image_base64") or b""  # blank: an empty image
                attrs["source"] = ImageSource(kind="base64", data=image_bytes)
            else:
                attrs["source"] = ImageSource(kind="url", url=attrs.pop("image_url"))
            return attrs

    # The schema of a JSON body: the same fields but the upload, which only multipart can carry.
    @extend_schema_serializer(component_name="ClassifyImageJsonRequest")
    class JsonInputSerializer(InputSerializer):
        image = None  # type: ignore[assignment]

    @extend_schema_serializer(component_name="Classification")
    class OutputSerializer(serializers.Serializer):
        class PredictionSerializer(serializers.Serializer):
            # DRF's metaclass takes declared fields off the class, so this does not replace
            # Field.label (a field's title); the stubs cannot see that.
            label = serializers.CharField()  # type: ignore[assignment]
            confidence = serializers.FloatField(min_value=0.0, max_value=1.0)

        @extend_schema_serializer(component_name="ClassificationTag")
        class TagSerializer(serializers.Serializer):
            label = serializers.CharField()  # type: ignore[assignment]
            probability = serializers.FloatField(min_value=0.0, max_value=1.0)
            present = serializers.BooleanField(help_text="The probability reaches its threshold.")

        @extend_schema_serializer(component_name="ClassificationModel")
        class ModelSerializer(serializers.Serializer):
            name = serializers.CharField(source="model_name")
            version = serializers.IntegerField(source="model_version")

        classification = serializers.CharField()
        confidence = serializers.FloatField(min_value=0.0, max_value=1.0)
        processing_time = serializers.FloatField(help_text="Server wall time, seconds.")
        predictions = PredictionSerializer(many=True)
        model = ModelSerializer(source="*")
        cached = serializers.BooleanField()
        image_sha256 = serializers.CharField()
        tags = TagSerializer(
            many=True,
            required=False,
            help_text="A multi-task model's tags (absent for other models).",
        )

        def to_representation(self, instance: object) -> dict:
            data = super().to_representation(instance)
            if data.get("tags") is None:
                data.pop("tags", None)
            return data

    @extend_schema(
        operation_id="classify_image",
        request={
            "application/json": JsonInputSerializer,
            "multipart/form-data": InputSerializer,
        },
        responses={
            200: OutputSerializer,
            400: error_response(
                "Malformed request, missing or double image, bad top_k, model or labels (or "
                "labels for a model that is not zero-shot), or an image_url with a refused "
                "scheme or form (invalid_url)."
            ),
            401: error_response(
                "A bearer token was sent and is not valid (anonymous calls need none)."
            ),
            413: error_response("The image, the fetched body or the request body is too large."),
            415: error_response("Not a JPEG, PNG, GIF or WebP image."),
            422: error_response(
                "The image cannot be decoded, or the image_url cannot be reached "
                "(url_unreachable: refused, unresolvable or unconnectable host)."
            ),
            429: error_response("Too many requests from this caller; see Retry-After."),
            502: error_response(
                "The image_url's server answered with an error or too many redirects."
            ),
            503: error_response(
                "No model is ready to answer (model_not_ready), or this worker is fetching or "
                "decoding as much as it can (busy; see Retry-After)."
            ),
            504: error_response("The image_url's server did not send the image in time."),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = services.image_source_classify(
            source=serializer.validated_data["source"],
            top_k=serializer.validated_data.get("top_k"),
            model_name=serializer.validated_data.get("model"),
            labels=serializer.validated_data.get("labels"),
            # The address the rate limits count (X-Forwarded-For only behind NUM_PROXIES).
            client=BaseThrottle().get_ident(request),
            admission=self.admission,  # taken with the first cache lookup: one Redis call
        )
        result.processing_time = round(request_elapsed(request), 6)
        self.result = result  # sent with classify_request_answered (the request log)
        return Response(classification_data(result))


def classification_data(result: ClassificationResult) -> dict:
    """The answer's JSON, as ClassifyImageApi.OutputSerializer (its schema) describes it.

    Built by hand because the serializer is a large share of a cache hit's CPU
    (docs/performance.md, "What was tried"); a test holds the two to the same output.
    """
    data = {
        "classification": result.classification,
        "confidence": result.confidence,
        "processing_time": result.processing_time,
        "predictions": [
            {"label": prediction.label, "confidence": prediction.confidence}
            for prediction in result.predictions
        ],
        "model": {"name": result.model_name, "version": result.model_version},
        "cached": result.cached,
        "image_sha256": result.image_sha256,
    }
    if result.tags is not None:
        data["tags"] = [
            {"label": tag.label, "probability": tag.probability, "present": tag.present}
            for tag in result.tags
        ]
    return data


class ModelListApi(APIView):
    """Registered model versions, and which version of each name is in production."""

    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="RegisteredModel")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="RegisteredModelVersion")
        class VersionSerializer(serializers.ModelSerializer):
            class Meta:
                model = ModelVersion
                fields = [
                    "version",
                    "stage",
                    "source_format",
                    "input_size",
                    "labels",
                    "artifact_sha256",
                    "metrics",
                    "source",
                    "created_at",
                    "promoted_at",
                ]

        name = serializers.CharField()
        production_version = serializers.IntegerField(allow_null=True)
        versions = VersionSerializer(many=True)

    @extend_schema(operation_id="list_models", responses={200: OutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        catalogue = selectors.model_catalogue()
        return Response(self.OutputSerializer(catalogue, many=True).data)


class CacheStatsApi(APIView):
    """How well the result cache works: hits, misses, hit rates, entries, TTLs and status."""

    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="CacheStats")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="CacheKindStats")
        class KindSerializer(serializers.Serializer):
            hits = serializers.IntegerField()
            misses = serializers.IntegerField()
            hit_rate = serializers.FloatField(min_value=0.0, max_value=1.0)
            entries = serializers.IntegerField(
                allow_null=True, help_text="Current entries, where the backend can count them."
            )
            ttl_seconds = serializers.IntegerField()

        backend = serializers.ChoiceField(choices=["redis", "local-memory"])
        status = serializers.ChoiceField(choices=["up", "down"])
        counters_scope = serializers.CharField(
            help_text="'all workers' with Redis; 'this worker process only' with local memory."
        )
        hits = serializers.IntegerField()
        misses = serializers.IntegerField()
        hit_rate = serializers.FloatField(min_value=0.0, max_value=1.0)
        by_kind = serializers.DictField(child=KindSerializer(), help_text="Keys: url, image.")
        counters_started_at = serializers.DateTimeField(allow_null=True)

    @extend_schema(operation_id="cache_stats", responses={200: OutputSerializer})
    def get(self, request: Request) -> Response:
        stats = selectors.result_cache_stats()
        return Response(self.OutputSerializer(stats).data)
