"""The birds model: Google's AIY birds classifier from TF Hub, downloaded when fetched.

``google/aiy/vision/classifier/birds_V1/1`` (Apache 2.0) is MobileNet V2 trained on iNaturalist
photos: 964 bird species and a ``background`` class, on 224 x 224 RGB images scaled to [0, 1].
It is published in the TF1 Hub format (a SavedModel under the empty tag set, which
hub.KerasLayer calls through its ``default`` signature and ``default`` output), served as a
tarball with ``saved_model.pb`` and ``variables/`` at its root; its label map is a separate CSV
of ``id,name`` rows.
"""

import csv
import hashlib
import io
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from django.conf import settings

from classification.exceptions import ModelRegistrationError
from classification.registry.sources import ModelSource
from classification.registry.sources.downloads import download_verified

BIRDS_CLASSES = 965  # 964 species and background
BIRDS_INPUT_SIZE = 224
# What the model card asks for: RGB scaled to [0, 1] (not MobileNet's usual [-1, 1]).
BIRDS_PREPROCESSING = {"scale": [0.0, 1.0]}
BIRDS_NOTICE = "TF Hub google/aiy/vision/classifier/birds_V1/1 by Google (Apache 2.0)"
SOURCE_MAX_LENGTH = 500  # ModelVersion.source

# A MobileNet V2 is some 15 MB; the bounds only stop a hostile or broken archive.
HUB_ARCHIVE_MAX_BYTES = 512 * 1024 * 1024
HUB_ARCHIVE_MAX_MEMBERS = 10_000
_COPY_CHUNK = 1024 * 1024


def _member_path(member: tarfile.TarInfo) -> PurePosixPath | None:
    """The member's path relative to the archive root; None for the root itself."""
    name = member.name
    if name.startswith("/") or "\\" in name:
        raise ModelRegistrationError(f"The model archive has an unsafe entry: {name!r}.")
    parts = [part for part in PurePosixPath(name).parts if part != "."]
    if ".." in parts:
        raise ModelRegistrationError(f"The model archive has an unsafe entry: {name!r}.")
    return PurePosixPath(*parts) if parts else None


def hub_archive_extract(
    *,
    archive: Path,
    destination: Path,
    max_bytes: int = HUB_ARCHIVE_MAX_BYTES,
    max_members: int = HUB_ARCHIVE_MAX_MEMBERS,
) -> Path:
    """Extract a TF Hub compressed model into the new folder ``destination`` and return it.

    The archive is a tar (usually gzipped) with ``saved_model.pb`` at its root, as TF Hub's
    ``?tf-hub-format=compressed`` serves it. Only regular files and folders are written, by
    this function itself (tarfile never creates anything): links, devices, absolute names,
    ``..``, more than ``max_members`` entries or more than ``max_bytes`` of content raise
    ModelRegistrationError, and nothing of the archive is left behind then.
    """
    destination.mkdir(parents=True)
    try:
        _extract_members(
            archive=archive, destination=destination, max_bytes=max_bytes, max_members=max_members
        )
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    if not (destination / "saved_model.pb").is_file():
        shutil.rmtree(destination, ignore_errors=True)
        raise ModelRegistrationError(
            "The model archive has no saved_model.pb at its root: it is not a TF Hub model."
        )
    return destination


def _extract_members(*, archive: Path, destination: Path, max_bytes: int, max_members: int) -> None:
    written = 0
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > max_members:
                    raise ModelRegistrationError(
                        f"The model archive has more than {max_members} entries."
                    )
                relative = _member_path(member)
                if member.isdir():
                    if relative is not None:
                        (destination / relative).mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile() or relative is None:
                    raise ModelRegistrationError(
                        f"The model archive has an entry that is not a plain file: {member.name!r}."
                    )
                if written + member.size > max_bytes:
                    raise ModelRegistrationError(
                        f"The model archive holds more than {max_bytes} bytes."
                    )
                target = destination / relative
                if target.exists():
                    raise ModelRegistrationError(f"The model archive has {member.name!r} twice.")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has content
                with source, target.open("wb") as out:
                    # Copy at most the size the header declared, whatever the stream holds.
                    remaining = member.size
                    while remaining > 0:
                        chunk = source.read(min(_COPY_CHUNK, remaining))
                        if not chunk:
                            break
                        out.write(chunk)
                        remaining -= len(chunk)
                written += member.size
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ModelRegistrationError(f"The model archive cannot be read: {exc}") from exc


def aiy_labelmap_labels(data: bytes, *, classes: int = BIRDS_CLASSES) -> list[str]:
    """The names of an AIY label map (a CSV with ``id`` and ``name`` columns) in output order.

    Rows are placed by their ``id``, not by their position: the published birds map lists
    ``background`` (id 964, the model's last output) first. Every id from 0 to
    ``classes - 1`` must appear exactly once; extra columns are ignored.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ModelRegistrationError("The label map is not UTF-8 text.") from exc
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"id", "name"} <= set(reader.fieldnames):
        raise ModelRegistrationError("The label map has no 'id' and 'name' columns.")
    names: dict[int, str] = {}
    for row in reader:
        try:
            index = int(row["id"])
        except (TypeError, ValueError) as exc:
            raise ModelRegistrationError(f"The label map has a bad id: {row['id']!r}.") from exc
        name = (row["name"] or "").strip()
        if not 0 <= index < classes or index in names or not name:
            raise ModelRegistrationError(
                f"The label map's row for id {index} is out of range, repeated or unnamed."
            )
        names[index] = name
    if len(names) != classes:
        raise ModelRegistrationError(
            f"The label map names {len(names)} classes; the model has {classes}."
        )
    return [names[index] for index in range(classes)]


def birds_source(*, workdir: Path, accept_unverified: bool = False) -> ModelSource:
    """The AIY birds SavedModel, downloaded and verified once, extracted into ``workdir``."""
    archive = download_verified(
        url=settings.BIRDS_MODEL_URL,
        sha256=settings.BIRDS_MODEL_SHA256,
        name="aiy_birds_V1_1.tar.gz",
        accept_unverified=accept_unverified,
    )
    labelmap = download_verified(
        url=settings.BIRDS_LABELS_URL,
        sha256=settings.BIRDS_LABELS_SHA256,
        name="aiy_birds_V1_labelmap.csv",
        accept_unverified=accept_unverified,
    )
    labelmap_bytes = labelmap.read_bytes()
    labels = aiy_labelmap_labels(labelmap_bytes)
    saved_model = hub_archive_extract(archive=archive, destination=workdir / "birds_saved_model")
    # The checksums come first: they are what --accept-unverified asks someone to pin later.
    source = (
        f"{BIRDS_NOTICE}; tarball SHA-256 {_sha256_file(archive)}, label map SHA-256 "
        f"{hashlib.sha256(labelmap_bytes).hexdigest()}; from {settings.BIRDS_MODEL_URL} "
        f"and {settings.BIRDS_LABELS_URL}"
    )
    return ModelSource(
        artifact_path=saved_model,
        labels=labels,
        input_size=BIRDS_INPUT_SIZE,
        source=source[:SOURCE_MAX_LENGTH],
        preprocessing=dict(BIRDS_PREPROCESSING),
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_COPY_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
