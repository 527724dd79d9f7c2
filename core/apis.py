"""Operational endpoints: GET /metrics, GET /health/live and GET /health/ready.

None of them is throttled or written to the access log (scrapers and probes call them every few
seconds). /metrics is limited to a bearer METRICS_TOKEN (or, outside production, addresses in
METRICS_ALLOWED_CIDRS); the health endpoints are open.
"""

import hmac
import ipaddress
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import health, metrics
from core.negotiation import FixedContentNegotiation


class MetricsTokenAuthentication(BaseAuthentication):
    """'Authorization: Bearer <METRICS_TOKEN>'; used only when a token is configured."""

    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[Any, str] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2 or not hmac.compare_digest(parts[1], settings.METRICS_TOKEN.encode()):
            raise exceptions.AuthenticationFailed("The metrics token is not valid.")
        from django.contrib.auth.models import AnonymousUser

        return AnonymousUser(), "metrics-token"

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="metrics"'


def client_in_networks(address: str | None, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(cidr, strict=False) for cidr in networks)


class MetricsAccess(BasePermission):
    """A valid metrics token; outside production also a connecting address in
    METRICS_ALLOWED_CIDRS.

    In production the address proves nothing: an ingress controller or proxy connects from
    inside the cluster network for every client it forwards, so only the token opens /metrics
    (and without one configured, nobody gets in). Elsewhere the connecting address
    (REMOTE_ADDR), never X-Forwarded-For, which any client can write.
    """

    message = "Metrics are served only with the metrics token (or to allowed addresses)."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.auth == "metrics-token":
            return True
        if settings.PRODUCTION:
            return False
        return client_in_networks(request.META.get("REMOTE_ADDR"), settings.METRICS_ALLOWED_CIDRS)


class _OperationalApi(APIView):
    throttle_classes: list = []
    content_negotiation_class = FixedContentNegotiation


class MetricsApi(_OperationalApi):
    """Prometheus metrics of every worker, in the Prometheus text format."""

    permission_classes = [MetricsAccess]

    def get_authenticators(self) -> list[BaseAuthentication]:
        # Without a token there is nothing to authenticate with: refusals are 403, not 401.
        return [MetricsTokenAuthentication()] if settings.METRICS_TOKEN else []

    @extend_schema(
        operation_id="metrics",
        responses={
            (200, "text/plain"): OpenApiResponse(
                response=OpenApiTypes.STR, description="Prometheus text exposition format."
            ),
            401: OpenApiResponse(description="A metrics token is needed, or the one sent is wrong"),
            403: OpenApiResponse(
                description="No token configured, and not an allowed address (or in production)."
            ),
        },
    )
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE)


class HealthLiveApi(_OperationalApi):
    """The process answers."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="health_live",
        responses={
            200: inline_serializer(
                name="HealthLive", fields={"status": serializers.ChoiceField(choices=["alive"])}
            )
        },
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "alive"})


class HealthReadyApi(_OperationalApi):
    """Whether this worker can answer classifications: 200 when ready, 503 when not."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    CheckSerializer = inline_serializer(
        name="HealthCheck",
        fields={
            "ok": serializers.BooleanField(allow_null=True, help_text="null: not configured"),
            "required": serializers.BooleanField(),
            "detail": serializers.CharField(),
        },
    )
    OutputSerializer = inline_serializer(
        name="HealthReady",
        fields={
            "status": serializers.ChoiceField(choices=["ready", "not_ready"]),
            "checks": serializers.DictField(
                child=CheckSerializer,
                help_text="Keys: model (required); database, redis, elasticsearch, fetch_capacity "
                "(reported).",
            ),
        },
    )

    @extend_schema(
        operation_id="health_ready", responses={200: OutputSerializer, 503: OutputSerializer}
    )
    def get(self, request: Request) -> Response:
        report = health.readiness()
        return Response(report, status=200 if report["status"] == "ready" else 503)
