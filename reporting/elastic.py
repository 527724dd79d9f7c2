"""The one boundary to Elasticsearch: the client, the document mappings and the bulk call.

Documents are declared with the DSL that ships inside the official client (``elasticsearch.dsl``,
the former ``elasticsearch-dsl`` package, merged into ``elasticsearch`` in 8.18). The client is
created once per process and settings combination, lazily, behind a lock.
"""

import threading
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from elasticsearch import Elasticsearch, helpers
from elasticsearch.dsl import (
    Boolean,
    Date,
    Document,
    Float,
    Index,
    Integer,
    Keyword,
    Object,
    Text,
)

from core.redaction import url_redact
from reporting.models import ReportCall, RequestLog

_lock = threading.Lock()
_clients: dict[tuple, Elasticsearch] = {}


def elasticsearch_client() -> Elasticsearch | None:
    """The process's client for ELASTICSEARCH_URL, or None when export is off."""
    url = settings.ELASTICSEARCH_URL
    if not url:
        return None
    key = (url, settings.ELASTICSEARCH_API_KEY, settings.ELASTICSEARCH_TIMEOUT)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = Elasticsearch(
                url,
                api_key=settings.ELASTICSEARCH_API_KEY or None,
                request_timeout=settings.ELASTICSEARCH_TIMEOUT,
                # The outbox retries; the client must not hold a batch through its own retries.
                max_retries=0,
                retry_on_timeout=False,
            )
            _clients[key] = client
        return client


def elasticsearch_clients_reset() -> None:
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


class RequestEventDocument(Document):
    """One POST /classify-image request (the fields of its RequestLog row)."""

    timestamp = Date(required=True)
    request_id = Keyword(required=True)
    outcome = Keyword()  # "success" or "error"
    input_kind = Keyword()
    image_url = Keyword(ignore_above=4096, fields={"text": Text()})
    image_url_sha256 = Keyword()
    image_sha256 = Keyword()
    model_name = Keyword()
    model_version = Integer()
    model = Keyword()  # "name:version", handy for Kibana splits
    top_label = Keyword()
    confidence = Float()
    processing_time = Float()
    cached = Boolean()
    cache_kind = Keyword()
    status_code = Integer()
    error_code = Keyword()
    user = Keyword()
    client_hash = Keyword()

    @classmethod
    def from_row(cls, row: RequestLog) -> "RequestEventDocument":
        return cls(
            meta={"id": row.request_id},
            timestamp=row.created_at,
            request_id=row.request_id,
            outcome="success" if row.succeeded else "error",
            input_kind=row.input_kind or None,
            # Rows are stored redacted; again here for rows a worker of an older version wrote.
            image_url=url_redact(row.image_url) or None,
            image_url_sha256=row.image_url_sha256,
            image_sha256=row.image_sha256 or None,
            model_name=row.model_name or None,
            model_version=row.model_version,
            model=f"{row.model_name}:{row.model_version}" if row.model_name else None,
            top_label=row.top_label or None,
            confidence=row.confidence,
            processing_time=row.processing_time,
            cached=row.cached,
            cache_kind=row.cache_kind,
            status_code=row.status_code,
            error_code=row.error_code or None,
            user=row.user.get_username() if row.user is not None else None,
            client_hash=row.client_hash or None,
        )


class ReportDocument(Document):
    """One GET /report answer: every field of the response plus when and who asked."""

    timestamp = Date(required=True)
    generated_at = Date()
    since = Date()
    until = Date()
    limit = Integer()
    caller = Keyword()
    client_hash = Keyword()
    top = Object(
        properties={
            "image_url": Keyword(ignore_above=4096),
            "count": Integer(),
            "min_processing_time": Float(),
            "max_processing_time": Float(),
            "avg_processing_time": Float(),
        }
    )

    @classmethod
    def from_row(cls, row: ReportCall) -> "ReportDocument":
        return cls(
            meta={"id": row.document_id},
            timestamp=row.created_at,
            generated_at=row.created_at,
            since=row.since,
            until=row.until,
            limit=row.limit,
            caller=row.user.get_username() if row.user is not None else "anonymous",
            client_hash=row.client_hash or None,
            top=[
                {**entry, "image_url": url_redact(entry["image_url"])}
                if isinstance(entry, dict) and isinstance(entry.get("image_url"), str)
                else entry
                for entry in row.top
            ],
        )


def _index_definitions() -> list[tuple[str, type[Document]]]:
    return [
        (settings.ELASTICSEARCH_EVENTS_INDEX, RequestEventDocument),
        (settings.ELASTICSEARCH_REPORT_INDEX, ReportDocument),
    ]


def index_templates_put(*, client: Elasticsearch, create_indices: bool = True) -> list[str]:
    """Install an index template per index (its mapping) and create the indices if missing.

    Idempotent: safe at every sender start and from the ``elasticsearch_setup`` command.
    Returns the index names.
    """
    names = []
    for name, document in _index_definitions():
        index = Index(name)
        index.settings(number_of_shards=1, number_of_replicas=0)
        index.mapping(document._doc_type.mapping)
        index.as_composable_template(f"{name}-template", pattern=f"{name}*", priority=100).save(
            using=client
        )
        if create_indices and not client.indices.exists(index=name):
            # Another worker may create it at the same moment: "already exists" is fine.
            client.options(ignore_status=400).indices.create(index=name)
        names.append(name)
    return names


def documents_bulk_index(
    *, client: Elasticsearch, index: str, documents: Iterable[Document]
) -> tuple[set[str], list[dict[str, Any]]]:
    """Index documents in one bulk request, each under its own id (a re-send overwrites).

    Returns the ids Elasticsearch accepted and the per-document errors. Raises the client's
    transport errors (connection refused, timeout) for the caller to retry later.
    """
    actions = []
    ids = []
    for document in documents:
        action = document.to_dict(include_meta=True, skip_empty=False)
        action["_index"] = index
        actions.append(action)
        ids.append(str(action["_id"]))
    if not actions:
        return set(), []
    _ok, errors = helpers.bulk(
        client,
        actions,
        raise_on_error=False,
        raise_on_exception=True,
        max_retries=0,
        chunk_size=len(actions),
        max_chunk_bytes=50 * 1024 * 1024,
    )
    failed = {str(next(iter(item.values())).get("_id")) for item in errors}  # type: ignore[union-attr]
    return {i for i in ids if i not in failed}, list(errors)  # type: ignore[arg-type]
