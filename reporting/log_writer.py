"""The request log's writer: request threads queue rows, one thread per worker inserts them.

Why: an insert on the request thread makes the answer wait for the table, and a lock on it (a
migration, a VACUUM FULL, a long report query) would hold every thread of every worker, health
probes included. Here a request only appends its built row to a bounded in-process queue; the
writer inserts whatever has queued in bulk (one statement per batch), so a locked, slow or
unreachable database delays the log, never an answer.

The contract, per worker process:
- every queued row is written, or spilled to a file and written later, or counted as dropped
  (``classifier_request_log_dropped_total{reason}``): ``queue_full`` when the queue is at
  ``REQUEST_LOG_QUEUE_SIZE`` (the database has been away for a while), ``refused`` when the
  database refuses the row itself (a data error no sanitising foresaw), ``spill_failed`` when
  neither the database nor the spill folder took the rows at exit;
- a failed batch is retried, backing off from ``REQUEST_LOG_RETRY_SECONDS`` up to
  ``REQUEST_LOG_MAX_BACKOFF``, for as long as the worker lives;
- when the worker exits (the server's worker stop, through core.lifecycle), the
  writer gets ``REQUEST_LOG_FLUSH_SECONDS`` to write the rest; what is still queued then goes
  to a JSON-lines file in ``REQUEST_LOG_SPILL_DIR``, which the next writer to start (any worker
  of any later start, on the same folder: a volume that outlives the container or pod) writes
  to the database, a file at a time, deleting it only once its rows are in (given back when the
  database refuses, tried again when it answers);
- while the database does not answer, rows are not held in memory: once a batch fails, the
  queue goes to this worker's outage file in the spill folder, and so does every row put while
  the outage lasts, as it is put (written through to the operating system: a SIGKILL or an OOM
  kill loses none of them). The writer holds an exclusive lock on that file; when the database
  answers again it closes the file and reads every spill file back, and a later writer reads
  any outage file whose lock is free (its worker is gone). A killed worker loses only the rows
  queued since the last batch it wrote, a fraction of a second of them
  (``REQUEST_LOG_LINGER_SECONDS``) while the database answers.

Without a running writer (tests, management commands, ``REQUEST_LOG_QUEUE=0``) rows are
inserted on the request thread, as before (``reporting.services.request_log_insert_now``).
"""

import contextlib
import fcntl
import itertools
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.db import close_old_connections as db_close_old_connections
from django.utils.dateparse import parse_datetime

from core.failures import FailureCounter
from reporting import metrics
from reporting.models import RequestLog
from reporting.outbox import export_sender_wake

logger = logging.getLogger(__name__)

writer_failures = FailureCounter("Writing queued request-log rows")

_SPILL_SUFFIX = ".jsonl"
# An outage file while its writer appends to it (locked); complete files end in _SPILL_SUFFIX.
_OUTAGE_SUFFIX = ".jsonl.outage"


class RequestLogWriter:
    """A bounded queue of built RequestLog rows and the thread that inserts them."""

    def __init__(self) -> None:
        self._rows: deque[RequestLog] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        # flush(): the writer skips its linger while one is asked, and tells when the queue empties.
        self._flush_asked = False
        self._flushed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._flush_deadline = 0.0
        self.capacity = 0
        # While the database does not answer: the open outage file rows go to (see the module).
        self._outage: IO[str] | None = None
        self._outage_path: Path | None = None
        # Counts of this process, for tests and the benchmark (the metrics add up workers).
        self.queued = self.written = self.dropped = self.spilled = self.replayed = 0

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopping

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def start(self) -> None:
        """Start the writer thread of this process (nothing if running or turned off)."""
        if not settings.REQUEST_LOG_QUEUE:
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self.capacity = settings.REQUEST_LOG_QUEUE_SIZE
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name="request-log-writer", daemon=True
            )
            self._thread.start()

    def put(self, row: RequestLog) -> bool:
        """Queue ``row`` for writing (or, while the database does not answer, append it to the
        outage file); False (and counted as dropped) when the queue is full."""
        with self._lock:
            if self._outage is not None and self._outage_append([row]):
                return True
            if len(self._rows) >= self.capacity:
                self.dropped += 1
                metrics.REQUEST_LOG_DROPPED.labels("queue_full").inc()
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    logger.error(
                        "The request-log queue is full (%d rows): %d row(s) dropped so far",
                        self.capacity,
                        self.dropped,
                    )
                return False
            self._rows.append(row)
            self.queued += 1
            # Only the first row of a batch, or a full batch, is worth waking the writer for.
            if len(self._rows) in (1, settings.REQUEST_LOG_BATCH_SIZE):
                self._wake.notify()
        metrics.REQUEST_LOG_QUEUE_LENGTH.inc()
        return True

    def flush(self, *, timeout: float) -> bool:
        """Write the queued rows now rather than after the linger, waiting at most ``timeout``
        seconds for the queue to empty; True when it is empty. Why: a caller that needs a row
        it just logged (feedback on an answer) must not wait for a batch to fill."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if not self._rows:
                return True
            if not self.running:
                return False
            self._flush_asked = True
            self._wake.notify_all()
            while self._rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._flushed.wait(remaining)
            return True

    def stop(self, *, timeout: float | None = None) -> None:
        """Write what is queued within ``timeout`` seconds (REQUEST_LOG_FLUSH_SECONDS), then
        spill the rest to a file; the thread ends. Safe to call when not running."""
        timeout = settings.REQUEST_LOG_FLUSH_SECONDS if timeout is None else timeout
        # Bounded below the server's graceful timeout, or the worker is killed mid-flush.
        timeout = min(timeout, max(0.5, settings.WEB_GRACEFUL_TIMEOUT / 2))
        with self._lock:
            thread = self._thread
            self._stopping = True
            self._flush_deadline = time.monotonic() + timeout
            self._wake.notify_all()
        if thread is not None:
            thread.join(timeout + 1.0)
        with self._lock:
            rest = list(self._rows)
            self._rows.clear()
        if rest:
            metrics.REQUEST_LOG_QUEUE_LENGTH.dec(len(rest))
            self._spill(rest)
        with self._lock:
            answering = self._outage is None
            self._outage_close()
        if not rest and answering and thread is not None:
            # The database took this worker's rows: write what other replicas (or dead
            # processes) left on the shared spill folder too, on the way out.
            with contextlib.suppress(Exception):
                self._replay_spilled()
            with contextlib.suppress(Exception):
                connection.close()
        self._thread = None

    # --- The thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if not self._replay_spilled():  # the database is away: try again when it answers
                with self._lock:
                    self._outage_begin()
        except Exception:
            logger.exception("Writing spilled request-log rows failed")
        backoff = 0.0
        try:
            while True:
                with self._lock:
                    while not self._rows and not self._stopping and self._outage is None:
                        self._wake.wait()
                    if not self._rows and self._stopping:
                        return
                    batch: list[RequestLog] = []
                    if self._rows:
                        self._linger()
                        if self._stopping and time.monotonic() > self._flush_deadline:
                            return  # stop() spills the rest
                        batch = list(itertools.islice(self._rows, settings.REQUEST_LOG_BATCH_SIZE))
                try:
                    if batch:
                        self._write(batch)
                    else:  # an outage, its rows on disk: does the database answer again?
                        _database_probe()
                except Exception as exc:
                    writer_failures.failed(exc)
                    with contextlib.suppress(Exception):
                        connection.close()  # a broken connection: open a fresh one next time
                    if self._stopping:
                        return  # the database refuses: spill now rather than retry
                    with self._lock:  # the queue to disk, and every row until it answers
                        self._outage_begin()
                    backoff = min(
                        max(backoff * 2, settings.REQUEST_LOG_RETRY_SECONDS),
                        settings.REQUEST_LOG_MAX_BACKOFF,
                    )
                    with self._lock:
                        self._wake.wait_for(lambda: self._stopping, timeout=backoff)
                    continue
                backoff = 0.0
                writer_failures.recovered()
                if batch:
                    with self._lock:
                        for _ in batch:
                            self._rows.popleft()
                        if not self._rows:
                            self._flush_asked = False
                            self._flushed.notify_all()
                    metrics.REQUEST_LOG_QUEUE_LENGTH.dec(len(batch))
                    export_sender_wake()
                if self._outage is not None:  # the database is back: the outage's rows too
                    with self._lock:
                        self._outage_close()
                    if not self._replay_spilled():
                        with self._lock:
                            self._outage_begin()
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def _linger(self) -> None:
        """Wait (lock held) up to REQUEST_LOG_LINGER_SECONDS for a batch to fill.

        Why: under load an insert per row or two costs more CPU than the requests it logs; a
        fifth of a second of rows goes in one statement instead.
        """
        deadline = time.monotonic() + settings.REQUEST_LOG_LINGER_SECONDS
        while (
            len(self._rows) < settings.REQUEST_LOG_BATCH_SIZE
            and not self._stopping
            and not self._flush_asked
        ):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.wait(remaining)

    def _write(self, batch: list[RequestLog]) -> None:
        """Insert the rows of ``batch`` not written yet; raises when the database refuses."""
        db_close_old_connections()
        pending = [row for row in batch if row.pk is None]
        if not pending:
            return
        try:
            with transaction.atomic():
                _rows_insert(pending)
        except (IntegrityError, DataError):
            # One row spoils the statement (a reused client X-Request-ID, say): one by one, so
            # that only a row the database refuses for itself is lost.
            for row in pending:
                row.pk = None
                self._write_one(row)
        else:
            self.written += len(pending)
            metrics.REQUEST_LOG_WRITTEN.inc(len(pending))

    def _write_one(self, row: RequestLog) -> None:
        replayed = getattr(row, "_replayed", False)
        if replayed and RequestLog.objects.filter(request_id=row.request_id).exists():
            row.pk = -1  # written before the spill (a flush that finished late): not twice
            return
        try:
            request_log_save(row=row)
        except (IntegrityError, DataError) as exc:
            row.pk = -1  # never retried
            self.dropped += 1
            metrics.REQUEST_LOG_DROPPED.labels("refused").inc()
            logger.error("The database refused a request-log row (%r); dropped", exc)
            return
        self.written += 1
        metrics.REQUEST_LOG_WRITTEN.inc()

    # --- Spill files ------------------------------------------------------------------------

    def _spill(self, rows: list[RequestLog]) -> None:
        folder = Path(settings.REQUEST_LOG_SPILL_DIR)
        name = f"{int(time.time())}-{os.getpid()}-{uuid.uuid4().hex[:8]}{_SPILL_SUFFIX}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f"{name}.partial"
            with partial.open("w", encoding="utf-8") as file:
                for row in rows:
                    file.write(json.dumps(_row_record(row)) + "\n")
            partial.rename(folder / name)  # complete files only: a reader never sees half
        except Exception:
            self.dropped += len(rows)
            metrics.REQUEST_LOG_DROPPED.labels("spill_failed").inc(len(rows))
            logger.exception("Could not spill %d request-log row(s); they are lost", len(rows))
            return
        self.spilled += len(rows)
        metrics.REQUEST_LOG_SPILLED.inc(len(rows))
        logger.warning(
            "Spilled %d request-log row(s) to %s; the next writer to start writes them",
            len(rows),
            folder / name,
        )

    def _outage_begin(self) -> None:
        """(Lock held.) Open this worker's outage file, locked, and move the queue into it;
        rows stay queued in memory if the spill folder cannot take them."""
        if self._outage is not None:
            return
        folder = Path(settings.REQUEST_LOG_SPILL_DIR)
        path = folder / f"{int(time.time())}-{os.getpid()}-{uuid.uuid4().hex[:8]}{_OUTAGE_SUFFIX}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            file = path.open("a", encoding="utf-8")
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while this worker lives
        except OSError:
            logger.exception("Could not open an outage file in %s; rows stay queued", folder)
            return
        self._outage, self._outage_path = file, path
        rows = list(self._rows)
        if self._outage_append(rows):
            self._rows.clear()
            metrics.REQUEST_LOG_QUEUE_LENGTH.dec(len(rows))
        logger.warning(
            "The database does not answer: request-log rows go to %s until it does", path
        )

    def _outage_append(self, rows: list[RequestLog]) -> bool:
        """(Lock held.) Append ``rows`` to the outage file, through to the operating system;
        False (the file closed, the rows not taken) when it cannot."""
        assert self._outage is not None
        try:
            self._outage.write("".join(json.dumps(_row_record(row)) + "\n" for row in rows))
            self._outage.flush()
        except (OSError, TypeError, ValueError):
            logger.exception("Could not append to %s; rows stay queued", self._outage_path)
            self._outage_close()
            return False
        self.spilled += len(rows)
        metrics.REQUEST_LOG_SPILLED.inc(len(rows))
        return True

    def _outage_close(self) -> None:
        """(Lock held.) Close the outage file as a complete spill file, for a writer to read."""
        file, path = self._outage, self._outage_path
        if file is None or path is None:
            return
        self._outage = self._outage_path = None
        with contextlib.suppress(OSError):
            path.rename(path.with_name(path.name.removesuffix(".outage")))
        with contextlib.suppress(OSError):
            file.close()  # and its lock

    def _replay_spilled(self) -> bool:
        """Write every spill file of the folder to the database, a file at a time: this
        process's, other workers', and those a dead process left (an outage file or a file it
        had taken, whose lock is free). A file is taken with an atomic rename and deleted only
        once its rows are in; when the database refuses, it is given back and False returned
        (a row written twice is kept once: see _write_one)."""
        folder = Path(settings.REQUEST_LOG_SPILL_DIR)
        if not folder.is_dir():
            return True
        for path in sorted(folder.glob(f"*{_OUTAGE_SUFFIX}")):
            _orphan_release(path, as_name=path.name.removesuffix(".outage"))
        for path in sorted(folder.glob(f"*{_SPILL_SUFFIX}.*.claimed")):
            _orphan_release(path, as_name=path.name.rsplit(".", 2)[0])
        for path in sorted(folder.glob(f"*{_SPILL_SUFFIX}")):
            claimed = path.with_name(f"{path.name}.{os.getpid()}.claimed")
            try:
                path.rename(claimed)  # atomic: one worker takes each file
                file = claimed.open("r", encoding="utf-8")
            except OSError:
                continue  # another worker took it
            with file:
                fcntl.flock(file, fcntl.LOCK_EX)  # held until its rows are in: not an orphan
                rows = _spill_rows(file.read().splitlines(), path)
                try:
                    self._write(rows)
                except Exception as exc:
                    writer_failures.failed(exc)
                    with contextlib.suppress(Exception):
                        connection.close()
                    with contextlib.suppress(OSError):
                        claimed.rename(path)  # given back, for a later try here or elsewhere
                    return False
                claimed.unlink()
            self.replayed += len(rows)
            logger.info("Wrote %d spilled request-log row(s) from %s", len(rows), path)
        return True


def _spill_rows(lines: list[str], path: Path) -> list[RequestLog]:
    rows = []
    for line in lines:
        try:
            record = json.loads(line) if line.strip() else None
        except ValueError:  # the last line of a file its worker was killed writing
            logger.warning("Skipped an incomplete request-log row in %s", path)
            continue
        if record is not None:
            row = _row_from_record(record)
            row._replayed = True  # type: ignore[attr-defined]
            rows.append(row)
    return rows


def _orphan_release(path: Path, *, as_name: str) -> None:
    """Rename ``path`` (an outage file, or a spill file a worker had taken) to ``as_name``, a
    complete spill file, if no live process holds its lock: its worker died with it."""
    try:
        with path.open("a", encoding="utf-8") as file:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.rename(path.with_name(as_name))
    except OSError:
        return  # its worker lives (or another reader took it)


def _database_probe() -> None:
    """Raises unless the database answers."""
    db_close_old_connections()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


# Values that request_log_build already makes as the database takes them (str, int, float,
# bool, None); the other fields (datetimes, JSON) go through their field's preparation.
_PLAIN_TYPES = frozenset(
    {
        "BigIntegerField",
        "BooleanField",
        "CharField",
        "FloatField",
        "ForeignKey",
        "IntegerField",
        "PositiveIntegerField",
        "PositiveSmallIntegerField",
        "TextField",
    }
)


def _rows_insert(rows: list[RequestLog]) -> None:
    """Insert ``rows`` with one prepared INSERT run for each (``executemany``).

    Why not ``bulk_create``: it prepares every value through its field and compiles the SQL
    per row, which costs more CPU on SQLite and PostgreSQL alike (docs/performance.md), and
    that is the writer holding the GIL that the worker's request threads wait for. The rows'
    primary keys stay unset.
    """
    fields = [field for field in RequestLog._meta.concrete_fields if not field.primary_key]
    prepared = [field.get_internal_type() not in _PLAIN_TYPES for field in fields]
    quote = connection.ops.quote_name
    sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608 (names from the model, quoted)
        quote(RequestLog._meta.db_table),
        ", ".join(quote(str(field.column)) for field in fields),
        ", ".join(["%s"] * len(fields)),
    )
    values = [
        [
            field.get_db_prep_save(getattr(row, field.attname), connection)
            if prepare
            else getattr(row, field.attname)
            for field, prepare in zip(fields, prepared, strict=True)
        ]
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, values)


_DATETIME_FIELDS = ("created_at", "exported_at")


def _row_record(row: RequestLog) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for field in RequestLog._meta.concrete_fields:
        if field.primary_key:
            continue
        value = getattr(row, field.attname)
        record[field.attname] = value.isoformat() if isinstance(value, datetime) else value
    return record


def _row_from_record(record: dict[str, Any]) -> RequestLog:
    for name in _DATETIME_FIELDS:
        if record.get(name):
            record[name] = parse_datetime(record[name])
    return RequestLog(**record)


def request_log_save(*, row: RequestLog) -> RequestLog:
    """Insert one built row. A reused request id gets a fresh unique suffix; raises database
    errors."""
    try:
        # A savepoint, so that a repeated client X-Request-ID cannot spoil an outer transaction.
        with transaction.atomic():
            row.save(force_insert=True)
    except IntegrityError:
        if not RequestLog.objects.filter(request_id=row.request_id).exists():
            raise
        # The client reused its X-Request-ID: keep the row under a fresh, unique id.
        row.pk = None
        row.request_id = f"{row.request_id[:31]}-{uuid.uuid4().hex}"
        row.save(force_insert=True)
    return row


_writer = RequestLogWriter()


def request_log_writer() -> RequestLogWriter:
    """This process's writer (running only once ``request_log_writer_start`` ran)."""
    return _writer


def request_log_writer_start() -> None:
    """Worker-start hook: start this worker's writer thread."""
    _writer.start()


def request_log_writer_stop() -> None:
    """Worker-exit hook: write the queue out (or spill it) within REQUEST_LOG_FLUSH_SECONDS."""
    _writer.stop()
