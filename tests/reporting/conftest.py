import itertools
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from classification.results import ClassificationResult, Prediction
from reporting.elastic import elasticsearch_clients_reset
from reporting.export import sender
from reporting.models import RequestLog
from reporting.services import RequestOutcome, request_log_create
from tests.reporting.fake_elasticsearch import FakeElasticsearch

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_ids = itertools.count()


def log_row(
    *,
    url: str = "",
    seconds: float = 0.1,
    at: datetime = T0,
    status: int = 200,
    error_code: str = "",
    cached: bool = False,
    cache_kind: str | None = None,
    label: str = "cat",
    confidence: float = 0.9,
    input_kind: str = "",
) -> RequestLog:
    """A log row written through the service, as a request would write it."""
    result = None
    if status == 200:
        result = ClassificationResult(
            predictions=[Prediction(label=label, confidence=confidence)],
            model_name="tiny",
            model_version=1,
            image_sha256="ab" * 32,
            cached=cached,
            cache_kind=cache_kind,
            processing_time=seconds,
        )
    return request_log_create(
        outcome=RequestOutcome(
            request_id=f"row-{next(_ids)}",
            status_code=status,
            processing_time=seconds,
            input_kind=input_kind or ("url" if url else "upload"),
            image_url=url,
            error_code=error_code,
            result=result,
            created_at=at,
        )
    )


def wait_for(condition: Callable[[], bool], *, timeout: float = 20.0) -> None:
    """Poll until ``condition`` holds (a wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("the condition never held")


@pytest.fixture(autouse=True)
def _no_sender_left_running() -> Iterator[None]:
    yield
    sender.stop()
    elasticsearch_clients_reset()


@pytest.fixture
def fake_es() -> Iterator[FakeElasticsearch]:
    server = FakeElasticsearch().start()
    yield server
    server.stop()


@pytest.fixture
def es_export(
    settings, transactional_db, fake_es: FakeElasticsearch
) -> Iterator[FakeElasticsearch]:
    """Export on, to the fake server, with short timeouts and polling for quick tests."""
    settings.ELASTICSEARCH_URL = fake_es.url
    settings.ELASTICSEARCH_TIMEOUT = 0.5
    settings.ELASTICSEARCH_EXPORT_INTERVAL = 0.05
    settings.ELASTICSEARCH_EXPORT_MAX_BACKOFF = 0.2
    yield fake_es
    sender.stop()
    elasticsearch_clients_reset()
