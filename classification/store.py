"""The model store: a content-addressed folder of model artifacts (settings.MODEL_STORE).

Below both the registry, which writes artifacts, and serving, which reads them back verified.

An artifact is named by the SHA-256 of its bytes, so storing the same file twice is free and a
file whose bytes changed on disk is caught by the checksum on load.
"""

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from classification.exceptions import ArtifactIntegrityError

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredArtifact:
    name: str  # file name inside the store
    sha256: str
    size: int

    @property
    def reference(self) -> dict[str, str]:
        """How a version's fields point at a stored file besides its main artifact."""
        return {"artifact": self.name, "sha256": self.sha256}


def artifact_references(value: object) -> list[tuple[str, str]]:
    """(name, sha256) of every ``StoredArtifact.reference`` found anywhere inside ``value``."""
    if isinstance(value, dict):
        if set(value) == {"artifact", "sha256"}:
            return [(str(value["artifact"]), str(value["sha256"]))]
        return [found for item in value.values() for found in artifact_references(item)]
    if isinstance(value, list):
        return [found for item in value for found in artifact_references(item)]
    return []


def store_root() -> Path:
    return Path(settings.MODEL_STORE)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_put_file(*, path: Path, suffix: str) -> StoredArtifact:
    """Copy the file at ``path`` into the store under its content address."""
    sha256 = file_sha256(path)
    name = f"{sha256}{suffix}"
    target = store_root() / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copy to a temporary name first, so a reader never sees half a file.
        with (
            tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp,
            path.open("rb") as source,
        ):
            shutil.copyfileobj(source, tmp, _CHUNK)
        os.replace(tmp.name, target)
    return StoredArtifact(name=name, sha256=sha256, size=target.stat().st_size)


def artifact_put_bytes(*, data: bytes, suffix: str) -> StoredArtifact:
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        return artifact_put_file(path=Path(tmp.name), suffix=suffix)


def artifact_path(name: str) -> Path:
    path = (store_root() / name).resolve()
    if path.parent != store_root().resolve():
        raise ArtifactIntegrityError(f"Artifact name {name!r} points outside the model store.")
    return path


def artifact_verify(*, name: str, sha256: str) -> None:
    """Check the stored file against the registry's checksum, reading it in chunks."""
    path = artifact_path(name)
    try:
        actual = file_sha256(path)
    except OSError as exc:
        raise ArtifactIntegrityError(f"Artifact {name} is missing from {store_root()}.") from exc
    if actual != sha256:
        raise ArtifactIntegrityError(
            f"Artifact {name} has SHA-256 {actual}, but the registry expects {sha256}."
        )


def artifact_read_verified(*, name: str, sha256: str) -> bytes:
    """The artifact's bytes, after checking them against the registry's checksum."""
    path = artifact_path(name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactIntegrityError(f"Artifact {name} is missing from {store_root()}.") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ArtifactIntegrityError(
            f"Artifact {name} has SHA-256 {actual}, but the registry expects {sha256}."
        )
    return data
