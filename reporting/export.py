"""The Elasticsearch export: an outbox drained by a background sender.

Request log rows and /report calls are written to the database on the request path; rows with
no ``exported_at`` are the outbox. The sender bulk-indexes them under their own ids (so a re-send
overwrites rather than duplicates) and then stamps them exported. When Elasticsearch is down,
slow or hanging only the sender waits: the backlog grows and drains when it returns.

In the web server each worker runs one sender thread, started by its first request; on PostgreSQL
the workers claim batches with ``SELECT ... FOR UPDATE SKIP LOCKED`` so two never send the same
rows at once (and if they did, the document ids would keep the count right).
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from elasticsearch import Elasticsearch
from elasticsearch.dsl import Document

from core.failures import FailureCounter
from reporting import metrics
from reporting.elastic import (
    ReportDocument,
    RequestEventDocument,
    documents_bulk_index,
    elasticsearch_client,
    index_templates_put,
)
from reporting.models import ExportedRecord, ReportCall, RequestLog

logger = logging.getLogger(__name__)

export_failures = FailureCounter("Exporting to Elasticsearch", counter=metrics.EXPORT_FAILURES)


@dataclass(frozen=True)
class Outbox:
    """An exported table and how one of its rows becomes a document."""

    model: type[ExportedRecord]
    to_document: Callable[[ExportedRecord], Document]

    @property
    def index(self) -> str:
        return self.model.export_index()


OUTBOXES = [
    Outbox(RequestLog, RequestEventDocument.from_row),  # type: ignore[arg-type]
    Outbox(ReportCall, ReportDocument.from_row),  # type: ignore[arg-type]
]


def _send(*, outbox: Outbox, client: Elasticsearch, rows: list) -> int:
    if not rows:
        return 0
    documents = [outbox.to_document(row) for row in rows]
    row_by_id = {str(document.meta.id): row for document, row in zip(documents, rows, strict=True)}
    accepted, errors = documents_bulk_index(client=client, index=outbox.index, documents=documents)
    dropped = {_item(error).get("_id") for error in errors if _refused_for_good(error)}
    if errors:
        # Logged once while it lasts (a refused batch would otherwise log at every poll).
        refusals.failed(
            DocumentsRefused(
                f"Elasticsearch refused {len(errors)} document(s) of {outbox.index} "
                f"({len(dropped)} for good, the rest to retry); first: {errors[0]}"
            )
        )
    else:
        refusals.recovered()
    pks = [row_by_id[doc_id].pk for doc_id in accepted if doc_id in row_by_id]
    # Documents refused for good (a mapping conflict, say) leave the outbox rather than block
    # it; their rows stay in the database and 'reexport_events' can send them again later.
    dropped_pks = [row_by_id[doc_id].pk for doc_id in dropped if doc_id in row_by_id]
    outbox.model._default_manager.filter(pk__in=pks + dropped_pks).update(
        exported_at=timezone.now()
    )
    metrics.EXPORT_SENT.labels(outbox.index).inc(len(pks))
    if dropped_pks:
        metrics.EXPORT_DROPPED.labels(outbox.index).inc(len(dropped_pks))
    return len(pks)


class DocumentsRefused(Exception):
    """Elasticsearch answered the bulk request but refused some of its documents."""


refusals = FailureCounter("Indexing documents in Elasticsearch")


def _item(error: dict) -> dict:
    return next(iter(error.values()), {}) if error else {}


def _refused_for_good(error: dict) -> bool:
    """A 4xx for the document itself (bad field, mapping conflict): sending again won't help.

    429 (too many requests) and 5xx are Elasticsearch's own trouble: those rows are retried.
    """
    status = _item(error).get("status")
    return isinstance(status, int) and 400 <= status < 500 and status != 429


def outbox_drain_batch(*, outbox: Outbox, client: Elasticsearch, batch: int) -> tuple[int, int]:
    """Export up to ``batch`` unexported rows of one outbox; returns (claimed, exported).

    Raises the client's transport errors; nothing is marked exported then.
    """
    pending = (
        outbox.model._default_manager.filter(exported_at__isnull=True)
        .select_related("user")
        .order_by("pk")
    )
    if connection.features.has_select_for_update_skip_locked:
        # Rows other workers are sending stay locked until they commit; skip them. The lock is
        # held at most ELASTICSEARCH_TIMEOUT (the bulk call's own deadline).
        with transaction.atomic():
            rows = list(pending.select_for_update(skip_locked=True, of=("self",))[:batch])
            return len(rows), _send(outbox=outbox, client=client, rows=rows)
    # SQLite has no row locks; a long read transaction would block the request log's writes,
    # so read, send and mark without one (a rare double send only overwrites a document).
    rows = list(pending[:batch])
    return len(rows), _send(outbox=outbox, client=client, rows=rows)


def outbox_drain(*, client: Elasticsearch, batch: int | None = None) -> int:
    """Export every row that is waiting, batch by batch; returns how many were exported."""
    batch = batch or settings.ELASTICSEARCH_EXPORT_BATCH
    exported = 0
    for outbox in OUTBOXES:
        while True:
            claimed, sent = outbox_drain_batch(outbox=outbox, client=client, batch=batch)
            exported += sent
            if claimed < batch or sent == 0:
                break
    return exported


def request_log_reexport(
    *, since: datetime | None, until: datetime | None, client: Elasticsearch, batch: int = 1000
) -> dict[str, int]:
    """Send again every row created in [since, until), exported or not; returns counts by index.

    Document ids are the row ids, so this overwrites what Elasticsearch holds for the range.
    """
    counts = {}
    for outbox in OUTBOXES:
        rows = outbox.model._default_manager.all()
        if since is not None:
            rows = rows.filter(created_at__gte=since)
        if until is not None:
            rows = rows.filter(created_at__lt=until)
        rows = rows.select_related("user").order_by("pk")
        sent, last_pk = 0, 0
        while True:
            chunk = list(rows.filter(pk__gt=last_pk)[:batch])
            if not chunk:
                break
            sent += _send(outbox=outbox, client=client, rows=chunk)
            last_pk = chunk[-1].pk
        counts[outbox.index] = sent
    return counts


class Sender:
    """Drains the outboxes in a loop until stopped, backing off while Elasticsearch fails."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.templates_ready_for: tuple | None = None

    def run_forever(self) -> None:
        backoff = settings.ELASTICSEARCH_EXPORT_INTERVAL
        while not self._stop.is_set():
            close_old_connections()
            interval = settings.ELASTICSEARCH_EXPORT_INTERVAL
            try:
                self.run_once()
            except Exception as exc:
                export_failures.failed(exc)
                backoff = min(max(backoff, interval) * 2, settings.ELASTICSEARCH_EXPORT_MAX_BACKOFF)
                self._stop.wait(backoff)
                continue
            export_failures.recovered()
            backoff = interval
            self._stop.wait(interval)
        connection.close()

    def run_once(self) -> int:
        client = elasticsearch_client()
        if client is None:
            return 0
        key = (
            settings.ELASTICSEARCH_URL,
            settings.ELASTICSEARCH_EVENTS_INDEX,
            settings.ELASTICSEARCH_REPORT_INDEX,
        )
        if self.templates_ready_for != key:
            index_templates_put(client=client)
            self.templates_ready_for = key
        return outbox_drain(client=client)

    def ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self.run_forever, name="elasticsearch-sender", daemon=True
            )
            self._thread.start()
            logger.info("Elasticsearch sender started")

    def stop(self, *, timeout: float = 10.0) -> None:
        with self._lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        self.templates_ready_for = None

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


sender = Sender()


def sender_ensure_started() -> None:
    """Start this process's sender thread if export is on and workers do the sending."""
    if settings.ELASTICSEARCH_URL and settings.ELASTICSEARCH_EXPORT_IN_WORKERS:
        sender.ensure_started()
