"""The export against a loopback server speaking the Elasticsearch API, with the real client."""

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from bench.loopback import free_port
from reporting.export import sender
from reporting.models import ReportCall, RequestLog
from tests.support.images import image_bytes
from tests.support.reporting import T0, log_row
from tests.support.waiting import wait_for

EVENTS, REPORTS = "classifier-events", "classifier-reports"
# The sender is a thread with its own database connection: it sees only committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


def classify(api_client, **extra):
    image = SimpleUploadedFile("p.png", image_bytes(format="PNG", size=(32, 32)), "image/png")
    return api_client.post("/classify-image", {"image": image}, format="multipart", **extra)


def all_exported() -> bool:
    return not RequestLog.objects.filter(exported_at__isnull=True).exists() and not (
        ReportCall.objects.filter(exported_at__isnull=True).exists()
    )


def test_each_request_becomes_one_event_document(api_client, tiny_model, es_export):
    ok = classify(api_client, HTTP_X_REQUEST_ID="req-1")
    bad = api_client.post("/classify-image", {}, format="json", HTTP_X_REQUEST_ID="req-2")
    wait_for(all_exported)
    documents = es_export.documents(EVENTS)
    assert set(documents) == {"req-1", "req-2"}
    success, error = documents["req-1"], documents["req-2"]
    assert success["outcome"] == "success" and success["status_code"] == 200
    assert success["top_label"] == ok.json()["classification"]
    assert success["processing_time"] == ok.json()["processing_time"]
    assert success["model"] == f"tiny:{tiny_model.version}" and success["input_kind"] == "upload"
    assert success["cached"] is False and success["timestamp"]
    assert error["outcome"] == "error" and error["status_code"] == bad.status_code == 400
    assert error["error_code"] == "invalid_request"
    template = es_export.templates[f"{EVENTS}-template"]
    assert template["index_patterns"] == [f"{EVENTS}*"]
    properties = template["template"]["mappings"]["properties"]
    assert properties["timestamp"]["type"] == "date"
    assert properties["top_label"]["type"] == "keyword"
    assert properties["processing_time"]["type"] == "float"


def test_each_report_call_becomes_one_report_document(api_client, es_export, django_user_model):
    log_row(url="https://images.example/a.jpg", seconds=0.25)
    alice = django_user_model.objects.create_user("alice", password="pw-alice-123")
    api_client.force_authenticate(alice)
    body = api_client.get("/report", {"limit": 3, "since": "2026-01-01T00:00:00Z"}).json()
    wait_for(all_exported)
    (document,) = es_export.documents(REPORTS).values()
    assert document["top"] == body["top"]
    assert document["limit"] == 3 and document["caller"] == "alice"
    assert document["since"].startswith("2026-01-01T00:00:00") and document["until"] is None
    assert document["timestamp"] and document["generated_at"]


def test_requests_succeed_while_elasticsearch_is_unreachable(
    api_client, tiny_model, es_export, settings
):
    settings.ELASTICSEARCH_URL = f"http://127.0.0.1:{free_port()}"  # a closed port
    for _ in range(3):
        assert classify(api_client).status_code == 200
    assert api_client.get("/report").status_code == 200
    assert sender.running
    assert RequestLog.objects.filter(exported_at__isnull=True).count() == 3
    settings.ELASTICSEARCH_URL = es_export.url  # it comes back: the backlog drains
    wait_for(all_exported)
    assert len(es_export.documents(EVENTS)) == RequestLog.objects.count() == 3
    assert len(es_export.documents(REPORTS)) == 1


def test_a_hanging_elasticsearch_never_holds_a_request(api_client, tiny_model, es_export):
    es_export.hang()
    assert classify(api_client).status_code == 200  # starts the sender, which then hangs
    wait_for(lambda: es_export.hung_requests >= 1)
    for _ in range(4):
        assert classify(api_client).status_code == 200
    assert RequestLog.objects.count() == 5
    assert es_export.documents(EVENTS) == {}
    es_export.release()
    wait_for(all_exported)
    request_ids = set(RequestLog.objects.values_list("request_id", flat=True))
    assert set(es_export.documents(EVENTS)) == request_ids
    assert call_command_count(EVENTS) == RequestLog.objects.count() == 5
    sent_ids = [doc_id for index, doc_id, _ in es_export.received if index == EVENTS]
    assert sorted(sent_ids) == sorted(request_ids)  # each row sent exactly once


def call_command_count(index: str) -> int:
    from reporting.elastic import elasticsearch_client

    return int(elasticsearch_client().count(index=index)["count"])


def test_reexport_sends_a_time_range_again(es_export, settings):
    settings.ELASTICSEARCH_EXPORT_IN_WORKERS = False  # only the commands send here
    early = log_row(url="https://images.example/a.jpg", at=T0)
    late = log_row(url="https://images.example/b.jpg", at=T0 + timedelta(days=1))
    call_command("export_events")
    assert set(es_export.documents(EVENTS)) == {early.request_id, late.request_id}
    es_export.received.clear()
    call_command("reexport_events", "--since", "2026-03-02T00:00:00Z")
    assert [doc_id for _, doc_id, _ in es_export.received] == [late.request_id]
    assert len(es_export.documents(EVENTS)) == 2  # overwritten, not duplicated


def test_setup_command_installs_templates_and_indices(es_export):
    call_command("elasticsearch_setup")
    assert set(es_export.templates) == {f"{EVENTS}-template", f"{REPORTS}-template"}
    assert set(es_export.indices) == {EVENTS, REPORTS}
    call_command("elasticsearch_setup")  # idempotent


def test_export_is_off_without_a_url(api_client, tiny_model, settings):
    settings.ELASTICSEARCH_URL = ""
    classify(api_client)
    api_client.get("/report")
    assert not sender.running
    assert ReportCall.objects.count() == 0


def test_index_names_come_from_settings(api_client, tiny_model, es_export, settings):
    settings.ELASTICSEARCH_EVENTS_INDEX = "staging-events"
    classify(api_client)
    wait_for(all_exported)
    assert EVENTS not in es_export.indices
    assert len(es_export.documents("staging-events")) == 1


def test_commands_say_when_there_is_nowhere_to_export(settings):
    from django.core.management.base import CommandError

    settings.ELASTICSEARCH_URL = ""
    with pytest.raises(CommandError, match="ELASTICSEARCH_URL"):
        call_command("export_events")
