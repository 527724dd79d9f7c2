"""Image URLs are logged, stored and exported without credentials: no userinfo password and no
value of a token-like query parameter survives, refused requests included; rows logged before
are redacted by a migration."""

import logging

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from core.redaction import url_redact
from reporting.export import sender
from reporting.models import ReportCall, RequestLog
from reporting.services import url_key, url_sha256
from tests.support.fetch import LoopbackServer
from tests.support.images import image_bytes
from tests.support.waiting import wait_for

PASSWORD, TOKEN, SIGNATURE = "pw-s3cret-1", "tok-value-2", "sig-value-3"
SECRETS = (PASSWORD, TOKEN, SIGNATURE)


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        (f"http://user:{PASSWORD}@example.com/a.jpg?w=2", "http://example.com/a.jpg?w=2"),
        (
            f"https://h.example/a.jpg?token={TOKEN}&w=2#x",
            "https://h.example/a.jpg?token=REDACTED&w=2#x",
        ),
        (
            f"https://s3.example/a?X-Amz-Signature={SIGNATURE}&X-Amz-Credential=AK/x&v=1",
            "https://s3.example/a?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED&v=1",
        ),
        (
            f"http://h/a?Access_Token={TOKEN};api%5Fkey={TOKEN}&SECRET={TOKEN}",
            "http://h/a?Access_Token=REDACTED;api%5Fkey=REDACTED&SECRET=REDACTED",
        ),
        (f"http://h/a#access_token={TOKEN}&state=1", "http://h/a#access_token=REDACTED&state=1"),
        (f"user:{PASSWORD}@h.example/a.jpg", "h.example/a.jpg"),  # typed without a scheme
        (f"http://u:{PASSWORD}@[not-an-address/a", "http://[not-an-address/a"),
        ("http://h/users/@alice/a.jpg?page=2&token=", "http://h/users/@alice/a.jpg?page=2&token="),
    ],
)
def test_a_url_loses_its_credentials_and_keeps_the_rest(url, kept):
    assert url_redact(url) == kept


def test_the_words_are_a_setting(settings):
    settings.URL_REDACT_QUERY_WORDS = ["ticket"]
    assert url_redact("http://h/a?ticket=1&token=2") == "http://h/a?ticket=REDACTED&token=2"


@pytest.fixture
def image_url_server(settings):
    settings.IMAGE_FETCH_PRIVATE_ALLOWLIST = ["127.0.0.1/32"]
    server = LoopbackServer()
    server.route(
        "/red.png",
        body=image_bytes(format="PNG", size=(8, 8), color=(255, 0, 0)),
        headers={"Content-Type": "image/png"},
    )
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def all_exported() -> bool:
    return not RequestLog.objects.filter(exported_at__isnull=True).exists() and not (
        ReportCall.objects.filter(exported_at__isnull=True).exists()
    )


@pytest.mark.django_db(transaction=True)  # the export sender sees committed rows only
def test_no_row_document_or_log_line_keeps_a_credential(
    api_client, tiny_model, image_url_server, es_export, caplog, settings
):
    caplog.set_level(logging.DEBUG)
    served = f"{image_url_server}/red.png?token={TOKEN}&X-Amz-Signature={SIGNATURE}"
    urls = {
        200: served,
        # Refused: userinfo (400), and an address the fetcher may not reach (422).
        400: f"http://user:{PASSWORD}@127.0.0.1:1/red.png?token={TOKEN}",
        422: f"http://10.0.0.1/red.png?auth={TOKEN}",
    }
    for status, url in urls.items():
        answer = api_client.post("/classify-image", {"image_url": url}, format="json")
        assert answer.status_code == status, answer.content
        assert not any(secret in answer.content.decode() for secret in SECRETS)
    report = api_client.get("/report").json()
    wait_for(all_exported)

    stored = list(RequestLog.objects.values_list("image_url", flat=True))
    assert len(stored) == 3
    assert f"{image_url_server}/red.png?token=REDACTED&X-Amz-Signature=REDACTED" in stored
    assert "http://127.0.0.1:1/red.png?token=REDACTED" in stored
    assert report["top"][0]["image_url"] == url_redact(served)
    exported = repr(es_export.documents("classifier-events")) + repr(
        es_export.documents("classifier-reports")
    )
    texts = [*stored, exported, repr(list(ReportCall.objects.values_list("top", flat=True)))]
    texts += [record.getMessage() + repr(record.__dict__) for record in caplog.records]
    for secret in SECRETS:
        assert not any(secret in text for text in texts), secret


@pytest.mark.django_db(transaction=True)
def test_the_migration_redacts_rows_logged_before_and_sends_them_again():
    executor = MigrationExecutor(connection)
    before, after = (
        [("reporting", "0003_request_log_tags")],
        [("reporting", "0004_redact_logged_urls")],
    )
    executor.migrate(before)
    apps = executor.loader.project_state(before).apps
    OldRequestLog = apps.get_model("reporting", "RequestLog")
    OldReportCall = apps.get_model("reporting", "ReportCall")
    leaky = f"http://user:{PASSWORD}@example.com/a.jpg?token={TOKEN}"
    plain = "http://example.com/b.jpg?w=1"
    for index, url in enumerate([leaky, plain]):
        sha = url_sha256(url)
        OldRequestLog.objects.create(
            request_id=f"old-{index}",
            image_url=url,
            image_url_sha256=sha,
            image_url_key=url_key(sha),
            processing_time=0.1,
            status_code=200,
            exported_at="2026-01-01T00:00:00Z",
        )
    OldReportCall.objects.create(
        document_id="call-1",
        limit=10,
        exported_at="2026-01-01T00:00:00Z",
        top=[{"image_url": leaky, "count": 1}, {"image_url": plain, "count": 1}],
    )

    executor = MigrationExecutor(connection)
    executor.migrate(after)
    sender.stop()
    # Then the rest of the migrations (later columns, the apps that depend on this one), so the
    # current models below read the rows, and the database is whole again for the next tests.
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    redacted = url_redact(leaky)
    assert redacted == "http://example.com/a.jpg?token=REDACTED"
    row = RequestLog.objects.get(request_id="old-0")
    assert (row.image_url, row.image_url_sha256) == (redacted, url_sha256(redacted))
    assert row.image_url_key == url_key(url_sha256(redacted)) and row.exported_at is None
    untouched = RequestLog.objects.get(request_id="old-1")
    assert untouched.image_url == plain and untouched.exported_at is not None
    call = ReportCall.objects.get(document_id="call-1")
    assert [entry["image_url"] for entry in call.top] == [redacted, plain]
    assert call.exported_at is None
