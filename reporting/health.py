"""The reporting app's readiness checks: Elasticsearch and the request-log queue (reported, never
required)."""

from django.conf import settings

from core.health import Check
from reporting.log_writer import request_log_writer


def elasticsearch_check() -> Check:
    if not settings.ELASTICSEARCH_URL:
        return Check(ok=None, required=False, detail="not configured (no export)")
    # Imported here: the Elasticsearch client library loads only once a probe finds export on.
    from reporting.elastic import elasticsearch_client

    client = elasticsearch_client()
    try:
        up = (
            client is not None
            and client.options(request_timeout=settings.HEALTH_CHECK_TIMEOUT).ping()
        )
    except Exception:
        up = False
    if up:
        return Check(ok=True, required=False, detail="answers")
    return Check(ok=False, required=False, detail="unreachable; the export outbox waits")


def request_log_check() -> Check:
    """The writer queue of this worker (reported, not required: a full queue drops log rows,
    never answers)."""
    writer = request_log_writer()
    if not writer.running:
        return Check(ok=None, required=False, detail="rows are written on the request thread")
    queued = len(writer)
    ok = queued < writer.capacity
    return Check(
        ok=ok,
        required=False,
        detail=f"{queued} of {writer.capacity} rows queued; {writer.dropped} dropped",
    )
