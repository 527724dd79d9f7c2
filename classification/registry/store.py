"""The model store: a content-addressed folder of model artifacts (settings.MODEL_STORE).

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
