"""Structured logs: the request id on every record, JSON lines in production, one access line.

``LOGGING`` in settings.py wires these together: ``RequestIdFilter`` sits on the console handler
so every record logged while a request is served carries its id (a context variable set by
RequestIdMiddleware), and ``LOG_FORMAT=json`` swaps the human-readable formatter for
python-json-logger's. AccessLogMiddleware (middleware.py) writes the one access line per request.
"""

import contextvars
import logging
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)


def request_id_bind(value: str) -> contextvars.Token:
    """Make ``value`` the request id of every record logged in this context until reset."""
    return _current_request_id.set(value)


def request_id_unbind(token: contextvars.Token) -> None:
    _current_request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Puts ``request_id`` on every record ("-" outside a request); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _current_request_id.get() or "-"
        return True


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: time, level, logger, message, process, request id, extras."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s %(process)d %(request_id)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            **kwargs,
        )


class ConsoleHandler(logging.StreamHandler):
    """A StreamHandler that formats a record before it takes the handler's lock.

    logging.Handler formats inside its lock, so request threads logging at once (the access
    line) queue behind each other's formatting and hand the lock and the GIL back and forth;
    only the write needs the lock (docs/performance.md, "Where a request's CPU goes").
    """

    def handle(self, record: logging.LogRecord) -> bool:
        verdict = self.filter(record)
        if not verdict:
            return False
        if isinstance(verdict, logging.LogRecord):  # Python 3.12: a filter may replace it
            record = verdict
        try:
            line = self.format(record) + self.terminator
            with self.lock:  # type: ignore[union-attr]  # created in Handler.__init__
                self.stream.write(line)
                self.flush()
        except RecursionError:  # as StreamHandler.emit
            raise
        except Exception:
            self.handleError(record)
        return True


def request_annotate(request: Any, **facts: Any) -> None:
    """Add facts about the request to its access log line (e.g. cache kind, model, error code).

    ``request`` is Django's HttpRequest or DRF's Request (which wraps one).
    """
    http_request = getattr(request, "_request", request)
    http_request.__dict__.setdefault("log_facts", {}).update(facts)
