"""POST /feedback (is this answer right?) and DELETE /feedback/<request_id> (forget it)."""

from django.core.validators import RegexValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.fields import empty
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.throttling import FEEDBACK_THROTTLES, client_address
from classification.apis import Base64ImageField, LabelListField, StrictCharField
from classification.exceptions import EmptyImage
from core.openapi import error_response
from ground_truth import services
from ground_truth.exceptions import InvalidFeedback
from ground_truth.models import Feedback

# What core.middleware keeps of a client's X-Request-ID (else the request gets a uuid4).
REQUEST_ID_PATTERN = r"[A-Za-z0-9._:-]{1,64}"
FEEDBACK_MAX_TAGS = 100


class StrictBooleanField(serializers.BooleanField):
    """A boolean that a form must send too: DRF reads a missing form boolean as false."""

    default_empty_html = empty


def _caller(request: Request) -> services.Caller:
    return services.Caller.of(user=request.user, client_address=client_address(request))


class FeedbackApi(APIView):
    """Say whether an answer was right, or give the right label (and tags)."""

    permission_classes = [AllowAny]
    throttle_classes = FEEDBACK_THROTTLES

    @extend_schema_serializer(component_name="GiveFeedback")
    class InputSerializer(serializers.Serializer):
        request_id = StrictCharField(
            required=False,
            max_length=64,
            validators=[RegexValidator(f"^{REQUEST_ID_PATTERN}$", "Not a request id.")],
            help_text="The X-Request-ID of the /classify-image answer.",
        )
        image_sha256 = StrictCharField(
            required=False,
            validators=[RegexValidator("^[0-9a-f]{64}$", "64 lower-case hexadecimal digits.")],
            help_text="Instead of request_id: the answer's image_sha256 (with model).",
        )
        model = serializers.SlugField(
            required=False, max_length=100, help_text="With image_sha256: the model's name."
        )
        model_version = serializers.IntegerField(
            required=False,
            min_value=1,
            help_text="With image_sha256: the version (default: your newest answer's).",
        )
        correct = StrictBooleanField(help_text="Whether the answer's top label was right.")
        # Not Field.label (a field's title): DRF's metaclass takes declared fields off the class.
        label = StrictCharField(  # type: ignore[assignment]
            required=False,
            max_length=200,
            help_text=(
                "The right label (required when correct is false): one of the model's labels; "
                "for a zero-shot model one of the labels the request sent; for a multi-task "
                "model the category."
            ),
        )
        tags = LabelListField(
            child=StrictCharField(max_length=200),
            required=False,
            max_length=FEEDBACK_MAX_TAGS,
            help_text=(
                "Multi-task models only: the tag labels the image has (required when correct "
                "is false). In multipart forms, one 'tags' field per tag."
            ),
        )
        image = serializers.FileField(
            required=False,
            allow_empty_file=True,
            help_text="The request's image again (multipart), kept for training.",
        )
        image_base64 = Base64ImageField(
            required=False, help_text="The request's image again, base64, kept for training."
        )

        def validate(self, attrs: dict) -> dict:
            by_request = "request_id" in attrs
            by_image = "image_sha256" in attrs or "model" in attrs
            if by_request == by_image:
                raise InvalidFeedback(
                    "Name the answer by 'request_id', or by 'image_sha256' and 'model'."
                )
            if by_image and not ("image_sha256" in attrs and "model" in attrs):
                raise InvalidFeedback("Send 'image_sha256' and 'model' together.")
            if "model_version" in attrs and not by_image:
                raise InvalidFeedback("'model_version' goes with 'image_sha256' and 'model'.")
            if "image" in attrs and "image_base64" in attrs:
                raise InvalidFeedback("Send the image once: 'image' or 'image_base64'.")
            upload = attrs.pop("image", None)
            image = upload.read() if upload is not None else attrs.pop("image_base64", None)
            if image is not None and not image:
                raise EmptyImage()
            attrs["image_bytes"] = image
            return attrs

    # The schema of a JSON body: the same fields but the upload, which only multipart can carry.
    @extend_schema_serializer(component_name="GiveFeedbackJson")
    class JsonInputSerializer(InputSerializer):
        image = None  # type: ignore[assignment]

    @extend_schema_serializer(component_name="Feedback")
    class OutputSerializer(serializers.ModelSerializer):
        @extend_schema_serializer(component_name="FeedbackModel")
        class ModelSerializer(serializers.Serializer):
            name = serializers.CharField()
            version = serializers.IntegerField()

        request_id = serializers.CharField(source="request_log.request_id")
        model = ModelSerializer(source="model_version")
        predicted_tags = serializers.ListField(
            child=serializers.CharField(),
            allow_null=True,
            help_text="A multi-task answer's present tags (null for other models).",
        )
        tags = serializers.ListField(
            child=serializers.CharField(),
            allow_null=True,
            help_text="The tags the image has, as the caller says (null for other models).",
        )
        image_kept = serializers.SerializerMethodField(
            help_text="The image sent along is kept (until image_expires_at) for training."
        )

        class Meta:
            model = Feedback
            fields = [
                "id",
                "request_id",
                "model",
                "correct",
                "predicted_label",
                "confidence",
                "label",
                "predicted_tags",
                "tags",
                "review",
                "image_kept",
                "image_expires_at",
                "created_at",
                "updated_at",
            ]

        def get_image_kept(self, feedback: Feedback) -> bool:
            return bool(feedback.image)

    @extend_schema(
        operation_id="give_feedback",
        request={
            "application/json": JsonInputSerializer,
            "multipart/form-data": InputSerializer,
        },
        responses={
            200: OpenApiResponse(OutputSerializer, description="Your earlier feedback, replaced."),
            201: OpenApiResponse(OutputSerializer, description="Feedback recorded."),
            400: error_response(
                "Malformed request; a label or tag the model does not have (unknown_label); an "
                "image that is not the request's (image_mismatch); a refused request "
                "(request_not_answered)."
            ),
            401: error_response("A bearer token was sent and is not valid."),
            403: error_response(
                "Someone else's request, or an anonymous one from another client or past the "
                "anonymous window (feedback_forbidden)."
            ),
            404: error_response("No such request, or none of yours (request_not_found)."),
            413: error_response("The image or the request body is too large."),
            429: error_response("Too many requests from this caller; see Retry-After."),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        saved = services.feedback_give(
            ref=services.AnswerRef(
                request_id=data.get("request_id"),
                image_sha256=data.get("image_sha256"),
                model_name=data.get("model"),
                model_version=data.get("model_version"),
            ),
            caller=_caller(request),
            said=services.FeedbackInput(
                correct=data["correct"],
                label=data.get("label"),
                tags=data.get("tags"),
                image=data["image_bytes"],
            ),
        )
        answer_status = status.HTTP_201_CREATED if saved.created else status.HTTP_200_OK
        return Response(self.OutputSerializer(saved.feedback).data, status=answer_status)


class FeedbackForgetApi(APIView):
    """Forget one of your requests: its feedback, kept image, shadow answers and personal data."""

    permission_classes = [AllowAny]
    throttle_classes = FEEDBACK_THROTTLES

    @extend_schema(
        operation_id="forget_request",
        parameters=[
            OpenApiParameter(
                "request_id",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                pattern=f"^{REQUEST_ID_PATTERN}$",
                description="The X-Request-ID of the /classify-image answer.",
            )
        ],
        responses={
            204: OpenApiResponse(description="Forgotten."),
            401: error_response("A bearer token was sent and is not valid."),
            403: error_response(
                "Someone else's request, or an anonymous one from another client or past the "
                "anonymous window (feedback_forbidden)."
            ),
            404: error_response("No such request (request_not_found)."),
            429: error_response("Too many requests from this caller; see Retry-After."),
        },
    )
    def delete(self, request: Request, request_id: str) -> Response:
        services.request_forget_by_caller(request_id=request_id, caller=_caller(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
