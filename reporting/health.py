"""The reporting app's readiness check: Elasticsearch answers (reported, never required)."""

from django.conf import settings

from classifier_site.health import Check


def elasticsearch_check() -> Check:
    # Imported here: the Elasticsearch client is not even imported while export is off.
    from reporting.elastic import elasticsearch_client

    client = elasticsearch_client()
    if client is None:
        return Check(ok=None, required=False, detail="not configured (no export)")
    try:
        up = client.options(request_timeout=settings.HEALTH_CHECK_TIMEOUT).ping()
    except Exception:
        up = False
    if up:
        return Check(ok=True, required=False, detail="answers")
    return Check(ok=False, required=False, detail="unreachable; the export outbox waits")
