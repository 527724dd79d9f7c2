from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.throttling import client_address
from core.openapi import error_response
from reporting import selectors, services


class ReportApi(APIView):
    """The most requested image URLs, with how often and how fast they were classified."""

    # Open like the rest of the read API: the report holds URLs and timings, no personal data.
    permission_classes = [AllowAny]

    class InputSerializer(serializers.Serializer):
        since = serializers.DateTimeField(
            required=False, help_text="ISO 8601; only requests at or after this time."
        )
        until = serializers.DateTimeField(
            required=False, help_text="ISO 8601; only requests before this time."
        )
        limit = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=settings.REPORT_MAX_LIMIT,
            default=settings.REPORT_DEFAULT_LIMIT,
        )

        def validate(self, attrs: dict) -> dict:
            # A query parameter given empty (?until=) is not a date-time: DRF would skip it.
            for name in ("since", "until", "limit"):
                if self.initial_data.get(name) == "":
                    raise serializers.ValidationError({name: "This value may not be empty."})
            since, until = attrs.get("since"), attrs.get("until")
            # since == until is an empty window (its answer lists nothing); until before since
            # is a mistake worth telling.
            if since is not None and until is not None and since > until:
                raise serializers.ValidationError({"until": "until must not be before since."})
            return attrs

    class OutputSerializer(serializers.Serializer):
        class EntrySerializer(serializers.Serializer):
            image_url = serializers.CharField()
            count = serializers.IntegerField()
            min_processing_time = serializers.FloatField(help_text="Seconds.")
            max_processing_time = serializers.FloatField(help_text="Seconds.")
            avg_processing_time = serializers.FloatField(help_text="Seconds.")

        generated_at = serializers.DateTimeField()
        since = serializers.DateTimeField(allow_null=True)
        until = serializers.DateTimeField(allow_null=True)
        top = EntrySerializer(many=True)

    @extend_schema(
        operation_id="report_top_urls",
        parameters=[InputSerializer],
        responses={
            200: OutputSerializer,
            400: error_response(
                "A bad since, until or limit: empty, not an ISO 8601 date-time, out of range "
                "(limit 1-100), or until before since."
            ),
        },
    )
    def get(self, request: Request) -> Response:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        since, until = params.validated_data.get("since"), params.validated_data.get("until")
        limit = params.validated_data["limit"]
        generated_at = timezone.now()
        top = selectors.report_top_urls(since=since, until=until, limit=limit)
        services.report_call_record(
            since=since,
            until=until,
            limit=limit,
            top=top,
            created_at=generated_at,
            user=request.user,
            client_address=client_address(request),
        )
        data = {"generated_at": generated_at, "since": since, "until": until, "top": top}
        return Response(self.OutputSerializer(data).data)
