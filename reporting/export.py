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
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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


def outbox_drain(
    *,
    client: Elasticsearch,
    batch: int | None = None,
    on_batch: Callable[[], None] | None = None,
) -> int:
    """Export every row that is waiting, batch by batch; returns how many were exported.

    ``on_batch`` is called after each batch sent (the sender's sign of progress).
    """
    batch = batch or settings.ELASTICSEARCH_EXPORT_BATCH
    exported = 0
    for outbox in OUTBOXES:
        while True:
            claimed, sent = outbox_drain_batch(outbox=outbox, client=client, batch=batch)
            exported += sent
            if on_batch is not None:
                on_batch()
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


def export_backoff_delay(*, attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): exponential from ``base``,
    at most ``cap``, with jitter ("equal jitter": between half and all of the step), so that
    senders restarted together do not all retry at the same instants."""
    step = min(cap, max(base, 0.001) * 2 ** min(attempt, 32))
    return step / 2 + random.uniform(0, step / 2)  # noqa: S311 - jitter, not a secret


class Sender:
    """Drains the outboxes in a loop until stopped, backing off while Elasticsearch (or the
    database) fails: it retries for as long as it runs, never gives up."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.templates_ready_for: tuple | None = None
        # What /health/live of 'export_events --follow' reports (read from another thread).
        self.following = False
        self.last_progress = time.monotonic()
        self.failures_in_a_row = 0
        self.next_retry_in = 0.0
        self.last_error = ""

    def _progressed(self) -> None:
        self.last_progress = time.monotonic()

    def run_forever(self) -> None:
        self.following = True
        self._progressed()
        try:
            self._loop()
        finally:
            self.following = False
            connection.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            close_old_connections()
            interval = settings.ELASTICSEARCH_EXPORT_INTERVAL
            try:
                self.run_once()
            except Exception as exc:
                self._failed(exc, interval=interval)
                self._stop.wait(self.next_retry_in)
                continue
            if self.failures_in_a_row:
                logger.info(
                    "Elasticsearch export works again after %d retries", self.failures_in_a_row
                )
            export_failures.recovered()
            self.failures_in_a_row, self.next_retry_in, self.last_error = 0, 0.0, ""
            metrics.EXPORT_RETRY_SECONDS.set(0)
            self._progressed()
            self._stop.wait(interval)

    def _failed(self, exc: Exception, *, interval: float) -> None:
        export_failures.failed(exc)  # counted; the traceback logged once while it lasts
        self.failures_in_a_row += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        self.next_retry_in = export_backoff_delay(
            attempt=self.failures_in_a_row,
            base=interval,
            cap=settings.ELASTICSEARCH_EXPORT_MAX_BACKOFF,
        )
        metrics.EXPORT_RETRY_SECONDS.set(self.next_retry_in)
        logger.warning(
            "Elasticsearch export failed (%d in a row: %s); retrying in %.1f s",
            self.failures_in_a_row,
            type(exc).__name__,
            self.next_retry_in,
        )
        # A failed round is progress too: the loop is turning, not stuck in a call.
        self._progressed()

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the loop runs and turned within EXPORT_HEALTH_STALE_SECONDS, and its state."""
        silent_for = time.monotonic() - self.last_progress
        alive = self.following and silent_for < settings.EXPORT_HEALTH_STALE_SECONDS
        return alive, {
            "following": self.following,
            "seconds_since_progress": round(silent_for, 3),
            "failures_in_a_row": self.failures_in_a_row,
            "next_retry_in": round(self.next_retry_in, 3),
            "last_error": self.last_error,
        }

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
        return outbox_drain(client=client, on_batch=self._progressed)

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
