"""Writes of the reporting app: request log rows, /report call records, the export outbox.

Writing a log row is on the request path, so it never raises: a failure is logged (once per
interval while it lasts) and counted, and the client still gets its answer.
"""

import functools
import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.utils.crypto import salted_hmac

from core.failures import FailureCounter
from core.redaction import url_redact
from reporting import metrics
from reporting.log_writer import request_log_save, request_log_writer
from reporting.models import ReportCall, RequestLog
from reporting.outbox import export_sender_wake

if TYPE_CHECKING:
    from classification.results import ClassificationResult

logger = logging.getLogger(__name__)

# The longest image URL kept in the log; longer ones are cut (the hash is of what is kept).
IMAGE_URL_MAX_CHARS = 8192


request_log_failures = FailureCounter(
    "Writing the request log", counter=metrics.REQUEST_LOG_FAILURES
)
report_call_failures = FailureCounter("Recording a /report call")


def client_address_hash(*, address: str | None) -> str:
    """An HMAC of the client address keyed by SECRET_KEY (blank when disabled or unknown)."""
    if not address or not settings.REQUEST_LOG_CLIENT_HASH:
        return ""
    return _address_hmac(address, settings.SECRET_KEY)


# Computed once per address (and key): salted_hmac derives its key with a hash on every call,
# and a worker sees the same few addresses (its proxies, its heavy callers) over and over.
@functools.lru_cache(maxsize=4096)
def _address_hmac(address: str, secret: str) -> str:
    return salted_hmac(
        "reporting.client-address", address, secret=secret, algorithm="sha256"
    ).hexdigest()


def url_sha256(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def url_key(sha256_hex: str) -> int:
    """The first 64 bits of a SHA-256 as a signed integer (what /report groups by)."""
    return int.from_bytes(bytes.fromhex(sha256_hex[:16]), "big", signed=True)


@dataclass
class RequestOutcome:
    """What the request log needs to know about one answered request."""

    request_id: str
    status_code: int
    processing_time: float
    input_kind: str = ""
    image_url: str = ""
    error_code: str = ""
    result: "ClassificationResult | None" = None
    user: User | AnonymousUser | None = None
    client_address: str | None = None
    created_at: datetime | None = None
    # A zero-shot request's own labels (None when it sent none).
    labels: list[str] | None = None

    def log_facts(self) -> dict[str, Any]:
        """What the access log line says about the request beyond method, path and status."""
        result = self.result
        if result is None:
            return {"error_code": self.error_code or None}
        return {
            "model": result.model_name,
            "model_version": result.model_version,
            "cache": result.cache_kind if result.cached else "miss",
        }


def _signed_in_user(user: User | AnonymousUser | None) -> User | None:
    """The user a row records: None for an anonymous caller."""
    # AnonymousUser is the one user whose is_authenticated is False; isinstance narrows the type.
    return None if user is None or isinstance(user, AnonymousUser) else user


def _tags_or_none(result: "ClassificationResult | None") -> list[dict] | None:
    if result is None or result.tags is None:
        return None
    return [
        {"label": tag.label, "probability": tag.probability, "present": tag.present}
        for tag in result.tags
    ]


def stored_text(value: str, *, max_chars: int) -> str:
    """``value`` as the database can always store it: NUL and lone surrogates (which a JSON body
    can carry, and PostgreSQL refuses) become U+FFFD, and at most ``max_chars`` are kept."""
    if value.isascii():
        cleaned = value
    else:  # pairs of surrogates become their character; a lone one becomes U+FFFD
        cleaned = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return cleaned.replace("\x00", "\ufffd")[:max_chars]


def request_log_build(*, outcome: RequestOutcome) -> RequestLog:
    """The (unsaved) log row of one request, every text field storable (see stored_text), its
    image URL without credentials (core.redaction)."""
    # Without credentials (userinfo, token-like query values), refused URLs included.
    image_url = stored_text(url_redact(outcome.image_url), max_chars=IMAGE_URL_MAX_CHARS)
    result = outcome.result
    top = result.predictions[0] if result is not None and result.predictions else None
    image_url_sha256 = url_sha256(image_url) if image_url else None
    user = _signed_in_user(outcome.user)
    input_stats = result.input_stats if result is not None else {}
    row = RequestLog(
        request_id=stored_text(outcome.request_id, max_chars=64),
        input_kind=outcome.input_kind,
        image_url=image_url,
        image_url_sha256=image_url_sha256,
        image_url_key=url_key(image_url_sha256) if image_url_sha256 else None,
        image_sha256=result.image_sha256 if result is not None else "",
        model_name=stored_text(result.model_name, max_chars=100) if result is not None else "",
        model_version=result.model_version if result is not None else None,
        top_label=stored_text(top.label, max_chars=200) if top is not None else "",
        confidence=top.confidence if top is not None else None,
        processing_time=outcome.processing_time,
        cached=bool(result is not None and result.cached),
        cache_kind=result.cache_kind if result is not None and result.cached else None,
        image_width=_int_or_none(input_stats.get("width")),
        image_height=_int_or_none(input_stats.get("height")),
        image_brightness=_float_or_none(input_stats.get("brightness")),
        tags=_tags_or_none(result),
        labels=(
            [stored_text(label, max_chars=300) for label in outcome.labels]
            if outcome.labels is not None and result is not None
            else None
        ),
        status_code=outcome.status_code,
        error_code=stored_text(outcome.error_code, max_chars=64),
        user=user,
        client_hash=client_address_hash(address=outcome.client_address),
    )
    if outcome.created_at is not None:
        row.created_at = outcome.created_at
    return row


def request_log_create(*, outcome: RequestOutcome) -> RequestLog:
    """Insert the log row of one request. Raises database errors (see request_log_record)."""
    return request_log_save(row=request_log_build(outcome=outcome))


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and value >= 0 else None


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def request_log_record(*, outcome: RequestOutcome) -> RequestLog | None:
    """Log one request; never raises, and never waits for the database when it can help it.

    In a web worker the row goes to this process's writer queue (``reporting.log_writer``)
    and is inserted by its thread, in bulk; the row is returned unsaved. Elsewhere (tests,
    management commands, ``REQUEST_LOG_QUEUE=0``) it is inserted at once and returned, or None
    when it could not be written (counted in ``request_log_failures``, logged at most once a
    minute while it lasts).
    """
    try:
        row = request_log_build(outcome=outcome)
    except Exception as exc:
        request_log_failures.failed(exc)
        return None
    writer = request_log_writer()
    if writer.running:
        writer.put(row)  # counts the row as dropped if the queue is full
        return row
    return request_log_insert_now(row=row)


def request_log_flush(*, timeout: float) -> bool:
    """Write this process's queued log rows now, waiting at most ``timeout`` seconds; True when
    none is left queued (also when no writer runs: rows are then inserted at once)."""
    return request_log_writer().flush(timeout=timeout)


def request_log_insert_now(*, row: RequestLog) -> RequestLog | None:
    """Insert ``row`` on this thread; never raises (None when it could not be written)."""
    try:
        request_log_save(row=row)
    except Exception as exc:
        request_log_failures.failed(exc)
        return None
    request_log_failures.recovered()
    export_sender_wake()
    return row


def report_call_record(
    *,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    top: list[dict[str, Any]],
    created_at: datetime,
    user: User | AnonymousUser | None,
    client_address: str | None,
) -> ReportCall | None:
    """Keep one /report answer for the Elasticsearch report index; never raises.

    Does nothing (returns None) when ELASTICSEARCH_URL is not set.
    """
    if not settings.ELASTICSEARCH_URL:
        return None
    try:
        call = ReportCall.objects.create(
            document_id=uuid.uuid4().hex,
            created_at=created_at,
            since=since,
            until=until,
            limit=limit,
            top=top,
            user=_signed_in_user(user),
            client_hash=client_address_hash(address=client_address),
        )
    except Exception as exc:
        report_call_failures.failed(exc)
        return None
    report_call_failures.recovered()
    export_sender_wake()
    return call
