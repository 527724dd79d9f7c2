"""Image URLs already logged lose their credentials, as new rows do (core.redaction).

Rows whose URL changes get a new hash and /report key, and are marked unexported so that the
export sends them again: an Elasticsearch document with the same id is replaced, so the copies
already exported lose the credentials too. /report calls kept for export are redacted likewise.
"""

import hashlib

from django.db import migrations
from django.db.models import Q

from core.redaction import url_redact

BATCH = 1000


def _sha256(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def _key(sha256_hex: str) -> int:
    return int.from_bytes(bytes.fromhex(sha256_hex[:16]), "big", signed=True)


def redact_request_log(apps, schema_editor):
    RequestLog = apps.get_model("reporting", "RequestLog")
    candidates = (
        RequestLog.objects.filter(
            Q(image_url__contains="@") | Q(image_url__contains="?") | Q(image_url__contains="#")
        )
        .only("id", "image_url")
        .order_by("id")
    )
    last_id = 0
    while True:
        batch = list(candidates.filter(id__gt=last_id)[:BATCH])
        if not batch:
            return
        last_id = batch[-1].id
        changed = []
        for row in batch:
            redacted = url_redact(row.image_url)
            if redacted != row.image_url:
                row.image_url = redacted
                row.image_url_sha256 = _sha256(redacted) if redacted else None
                row.image_url_key = _key(row.image_url_sha256) if redacted else None
                row.exported_at = None
                changed.append(row)
        RequestLog.objects.bulk_update(
            changed, ["image_url", "image_url_sha256", "image_url_key", "exported_at"]
        )


def redact_report_calls(apps, schema_editor):
    ReportCall = apps.get_model("reporting", "ReportCall")
    for call in ReportCall.objects.only("id", "top").iterator(chunk_size=BATCH):
        top = [
            {**entry, "image_url": url_redact(entry["image_url"])}
            if isinstance(entry, dict) and isinstance(entry.get("image_url"), str)
            else entry
            for entry in call.top or []
        ]
        if top != call.top:
            ReportCall.objects.filter(id=call.id).update(top=top, exported_at=None)


class Migration(migrations.Migration):
    dependencies = [
        ("reporting", "0003_request_log_tags"),
    ]

    operations = [
        migrations.RunPython(redact_request_log, migrations.RunPython.noop, elidable=True),
        migrations.RunPython(redact_report_calls, migrations.RunPython.noop, elidable=True),
    ]
