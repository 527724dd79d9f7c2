from collections.abc import Iterator

import pytest

from reporting.elastic import elasticsearch_clients_reset
from reporting.export import sender
from tests.support.fake_elasticsearch import FakeElasticsearch


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
