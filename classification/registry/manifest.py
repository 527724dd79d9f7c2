"""A model manifest: registry rows written out as JSON, to recreate them beside a copied store.

The Docker image registers its offline models while it is built (that needs TensorFlow and the
model wheels), then ships the model store and this manifest to a runtime stage without either.
The registry rows live in the database, which the image does not contain, so the entrypoint
imports the manifest on start: each model name that the database lacks is created from it, with
the same versions, stages and checksums; names already registered are left alone.
"""

import json
from pathlib import Path

from django.db import connection, transaction
from django.utils import timezone

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.versions import model_version_create
from classification.store import artifact_references, artifact_verify

MANIFEST_FORMAT = 1
# The PostgreSQL advisory lock that serializes imports (any fixed 64-bit number).
_LOCK_KEY = 0x6D6F64656C73
# Everything that describes a version but its identity, its stage (kept beside) and what the
# database or monitoring wrote later: every other field of ModelVersion, new ones included.
_NOT_EXPORTED = {"id", "name", "version", "stage", "created_at", "promoted_at", "reference_profile"}


def _fields() -> list[str]:
    return [f.name for f in ModelVersion._meta.concrete_fields if f.name not in _NOT_EXPORTED]


def manifest_export(*, path: Path) -> int:
    """Write every registered version to ``path``; returns how many."""
    versions = [
        {"name": v.name, "version": v.version, "stage": v.stage}
        | {field: getattr(v, field) for field in _fields()}
        for v in ModelVersion.objects.order_by("name", "version")
    ]
    path.write_text(json.dumps({"format": MANIFEST_FORMAT, "versions": versions}, indent=1))
    return len(versions)


def manifest_import(*, path: Path) -> list[str]:
    """Create the versions of each model name in ``path`` that the registry does not have.

    Every file serving reads for a version (its artifact, and those its kind's fields refer to,
    such as a zero-shot version's text encoder) is checked against its SHA-256 in the model
    store first. Returns the names created. Raises ModelRegistrationError for a manifest that
    cannot be used.
    """
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelRegistrationError(f"Cannot read the model manifest {path}: {exc}") from exc
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ModelRegistrationError(f"{path} is not a model manifest of format {MANIFEST_FORMAT}.")
    by_name: dict[str, list[dict]] = {}
    for entry in manifest["versions"]:
        by_name.setdefault(entry["name"], []).append(entry)
    created = []
    for name, entries in by_name.items():
        for entry in entries:
            served = [(entry["artifact"], entry["artifact_sha256"])]
            for stored_name, sha256 in served + artifact_references(entry):
                artifact_verify(name=stored_name, sha256=sha256)
        with transaction.atomic():
            # Two containers starting at once: one waits for the other's rows, then skips.
            # SQLite's IMMEDIATE transactions (settings.py) already take the write lock.
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
            if ModelVersion.objects.filter(name=name).exists():
                continue
            for entry in sorted(entries, key=lambda e: e["version"]):
                # A field the manifest lacks (written before the field existed) keeps its default.
                fields = {f: entry[f] for f in _fields() if f in entry}
                version = model_version_create(name=name, stage=entry["stage"], **fields)
                if version.stage == ModelVersion.Stage.PRODUCTION:
                    version.promoted_at = timezone.now()
                    version.save(update_fields=["promoted_at"])
        created.append(name)
    return created
