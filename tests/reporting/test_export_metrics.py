"""The export's figures on /metrics, and refused documents: counted, logged once, not stuck."""

import logging

import pytest

from reporting.elastic import elasticsearch_client
from reporting.export import outbox_drain, refusals
from reporting.models import RequestLog
from tests.support.observability import scrape, value
from tests.support.reporting import log_row

EVENTS = "classifier-events"


@pytest.fixture(autouse=True)
def _fresh_refusals():
    refusals.recovered()
    yield
    refusals.recovered()


def test_queue_length_sent_and_dropped_documents(es_export, caplog):
    rows = [log_row(url=f"http://example.test/{i}.jpg") for i in range(4)]
    es_export.refuse_ids = {rows[0].request_id}
    before = scrape()
    assert value(before, "classifier_elasticsearch_queue_length", index=EVENTS) == 4

    with caplog.at_level(logging.ERROR, logger="core.failures"):
        assert outbox_drain(client=elasticsearch_client()) == 3
        log_row(url="http://example.test/again.jpg")
        outbox_drain(client=elasticsearch_client())
    after = scrape()

    sent = "classifier_elasticsearch_documents_sent_total"
    dropped = "classifier_elasticsearch_documents_dropped_total"
    assert value(after, sent, index=EVENTS) - value(before, sent, index=EVENTS) == 4
    assert value(after, dropped, index=EVENTS) - value(before, dropped, index=EVENTS) == 1
    assert value(after, "classifier_elasticsearch_queue_length", index=EVENTS) == 0
    # The refused row left the outbox (it stays in the database for a later re-export).
    assert RequestLog.objects.filter(exported_at__isnull=True).count() == 0
    assert caplog.text.count("Indexing documents in Elasticsearch failed") == 1


def test_refusals_are_logged_once_while_they_last(es_export, caplog):
    with caplog.at_level(logging.ERROR, logger="core.failures"):
        for round_ in range(3):
            row = log_row(url=f"http://example.test/refused-{round_}.jpg")
            es_export.refuse_ids.add(row.request_id)
            outbox_drain(client=elasticsearch_client())
    assert caplog.text.count("Elasticsearch refused 1 document(s)") == 1


def test_no_queue_length_without_export(settings, db):
    settings.ELASTICSEARCH_URL = ""
    log_row(url="http://example.test/a.jpg")
    assert "classifier_elasticsearch_queue_length" not in scrape()
