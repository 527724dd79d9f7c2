"""Files of one revision of a Hugging Face hub model repository, downloaded once and verified.

Speaks the two endpoints the hub's own client uses: ``GET {hub}/api/models/{repo}/revision/
{revision}?blobs=true`` lists the revision's commit (``sha``) and files (``siblings``: each an
``rfilename``, a ``size`` and a ``blobId``, plus ``lfs: {sha256, size}`` for files kept in
Git LFS), and ``GET {hub}/{repo}/resolve/{commit}/{file}`` serves a file (LFS files through a
redirect to a storage host, which is followed).

Each file is checked against what the listing says: LFS files by SHA-256, small files by their
git blob id (the SHA-1 of ``b"blob <size>\\0"`` and the content). Verified files are kept in the
download cache under their checksum, so another run (or another revision sharing the file)
downloads nothing; an interrupted download is kept as ``.part`` and continued with an HTTP
Range request next time. The listing of a commit is kept too: given that commit as the
revision, a later run needs no network at all.
"""

import hashlib
import http.client
import json
import logging
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from django.conf import settings

from classification.exceptions import ModelRegistrationError
from classification.registry.sources.downloads import download_cache

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_COMMIT = re.compile(r"[0-9a-f]{40}")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA1, _SHA256 = re.compile(r"[0-9a-f]{40}"), re.compile(r"[0-9a-f]{64}")
_OFFLINE_ADVICE = (
    "This machine may have no internet access: run the command where the hub is reachable "
    "and copy MODEL_DOWNLOAD_CACHE here (then pass --revision with the commit it names), or "
    "point HF_HUB_URL at a reachable mirror."
)


class ProgressStream(Protocol):
    """Where the progress bar goes (tqdm writes and flushes it): sys.stderr, for one."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


@dataclass(frozen=True)
class HubFile:
    """One file of a revision as the hub lists it."""

    name: str
    size: int
    blob_id: str  # git's SHA-1 of the file (of its LFS pointer for LFS files)
    lfs_sha256: str = ""  # the content's SHA-256, for files kept in Git LFS

    @property
    def checksum(self) -> str:
        return self.lfs_sha256 or self.blob_id

    def digest(self, path: Path) -> str:
        """The checksum of ``path`` computed the way this file's listing states it."""
        if self.lfs_sha256:
            hasher = hashlib.sha256()
        else:
            hasher = hashlib.sha1(usedforsecurity=False)  # git's object id, not a secret
            hasher.update(b"blob %d\0" % path.stat().st_size)
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                hasher.update(chunk)
        return hasher.hexdigest()


@dataclass(frozen=True)
class HubRevision:
    repo: str
    commit: str
    files: dict[str, HubFile]


def _opener() -> urllib.request.OpenerDirector:
    # Proxies from the environment are ignored, as for every model download here.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _hub() -> str:
    return str(settings.HF_HUB_URL).rstrip("/")


def _repo_folder(repo: str) -> Path:
    folder = download_cache() / "huggingface" / repo.replace("/", "--")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _parse_revision(repo: str, data: object) -> HubRevision:
    try:
        if not isinstance(data, dict):
            raise TypeError("not an object")
        commit = str(data["sha"])
        files = {}
        for sibling in data["siblings"]:
            lfs = sibling.get("lfs") or {}
            hub_file = HubFile(
                name=str(sibling["rfilename"]),
                size=int(lfs.get("size", sibling["size"])),
                blob_id=str(sibling["blobId"]),
                lfs_sha256=str(lfs.get("sha256", "")),
            )
            # Checksums name files in the cache: nothing else may pass.
            if not _SHA1.fullmatch(hub_file.blob_id) or (
                lfs and not _SHA256.fullmatch(hub_file.lfs_sha256)
            ):
                raise ValueError(f"{hub_file.name}: checksums {sibling!r}")
            files[hub_file.name] = hub_file
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelRegistrationError(
            f"The hub's listing of {repo} is not what its API returns (commit sha and "
            f"siblings with rfilename, size, blobId): {exc!r}."
        ) from exc
    if not _COMMIT.fullmatch(commit):
        raise ModelRegistrationError(f"The hub named {commit!r} as the commit of {repo}.")
    return HubRevision(repo=repo, commit=commit, files=files)


def hub_revision(*, repo: str, revision: str = "main") -> HubRevision:
    """The commit ``revision`` (a branch, tag or commit) of ``repo`` is at, and its files.

    A commit listed before is read from the download cache without asking the hub. Raises
    ModelRegistrationError when the hub cannot be reached (with advice) or answers an error.
    """
    if not _REPO.fullmatch(repo):
        raise ModelRegistrationError(f"{repo!r} is not a hub repository name (owner/name).")
    folder = _repo_folder(repo) / "revisions"
    if _COMMIT.fullmatch(revision) and (folder / f"{revision}.json").exists():
        return _parse_revision(repo, json.loads((folder / f"{revision}.json").read_text()))
    url = f"{_hub()}/api/models/{repo}/revision/{quote(revision, safe='')}?blobs=true"
    try:
        with _opener().open(url, timeout=settings.MODEL_DOWNLOAD_TIMEOUT) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        advice = (
            " The repository or revision does not exist (or is private)."
            if exc.code in (401, 404)
            else ""
        )
        raise ModelRegistrationError(
            f"The hub answered HTTP {exc.code} for {repo} at {revision!r}.{advice}"
        ) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelRegistrationError(
            f"Could not reach the Hugging Face hub at {_hub()}: {reason}. {_OFFLINE_ADVICE}"
        ) from exc
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ModelRegistrationError(f"The hub's listing of {repo} is not JSON.") from exc
    listed = _parse_revision(repo, data)
    folder.mkdir(exist_ok=True)
    (folder / f"{listed.commit}.json").write_bytes(body)
    return listed


def _resolve_url(repo: str, commit: str, name: str) -> str:
    return f"{_hub()}/{repo}/resolve/{commit}/{quote(name)}"


def _transfer(*, url: str, part: Path, hub_file: HubFile, progress: ProgressStream | None) -> None:
    """Fill ``part`` up to the file's size, continuing what it holds with a Range request."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    if offset > hub_file.size:
        part.unlink()
        offset = 0
    request = urllib.request.Request(url)  # noqa: S310 (http(s) only: HF_HUB_URL)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with _opener().open(request, timeout=settings.MODEL_DOWNLOAD_TIMEOUT) as response:
            content_range = response.headers.get("Content-Range", "")
            if offset and not (
                response.status == 206 and content_range.startswith(f"bytes {offset}-")
            ):
                offset = 0  # the server sent the whole file: start again
            with (
                part.open("ab" if offset else "wb") as file,
                tqdm(
                    total=hub_file.size,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=hub_file.name,
                    file=progress,
                    disable=progress is None,
                    mininterval=0.5,
                ) as bar,
            ):
                while chunk := response.read(_CHUNK):
                    file.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset == hub_file.size:
            return  # the part is already whole; its checksum decides
        raise ModelRegistrationError(
            f"The hub answered HTTP {exc.code} for {hub_file.name} ({url})."
        ) from exc
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        have = part.stat().st_size if part.exists() else 0
        raise ModelRegistrationError(
            f"The download of {hub_file.name} stopped at {have} of {hub_file.size} bytes "
            f"({reason}); run the command again to resume it."
        ) from exc


def hub_file_download(
    *, revision: HubRevision, name: str, progress: ProgressStream | None = sys.stderr
) -> Path:
    """The verified file ``name`` of ``revision``, from the download cache or the hub.

    Shows a progress bar on ``progress`` (None: none). A file whose checksum is not the
    listed one is deleted and refused; a transfer that stops is kept to be resumed. Raises
    ModelRegistrationError.
    """
    hub_file = revision.files.get(name)
    if hub_file is None:
        raise ModelRegistrationError(
            f"{revision.repo} has no {name} at commit {revision.commit} "
            f"(it has {', '.join(sorted(revision.files)) or 'no files'})."
        )
    blobs = _repo_folder(revision.repo) / "blobs"
    blobs.mkdir(exist_ok=True)
    target = blobs / hub_file.checksum
    if target.exists():
        if hub_file.digest(target) == hub_file.checksum:
            return target
        target.unlink()  # damaged since it was verified: fetch it again
    part = blobs / f"{hub_file.checksum}.part"
    url = _resolve_url(revision.repo, revision.commit, name)
    _transfer(url=url, part=part, hub_file=hub_file, progress=progress)
    size = part.stat().st_size
    if size < hub_file.size:
        raise ModelRegistrationError(
            f"The download of {name} stopped at {size} of {hub_file.size} bytes; run the "
            "command again to resume it."
        )
    actual = hub_file.digest(part)
    if size != hub_file.size or actual != hub_file.checksum:
        part.unlink()
        kind = "SHA-256" if hub_file.lfs_sha256 else "git blob id"
        raise ModelRegistrationError(
            f"{name} of {revision.repo} at {revision.commit} has {kind} {actual} and "
            f"{size} bytes; the hub lists {hub_file.checksum} and {hub_file.size} bytes. "
            "Deleted the download; nothing was registered."
        )
    part.replace(target)
    logger.info("Downloaded %s of %s (%d bytes)", name, revision.repo, size)
    return target


def hub_files_download(
    *, repo: str, revision: str, names: Iterable[str], progress: ProgressStream | None = sys.stderr
) -> tuple[HubRevision, dict[str, Path]]:
    """``names`` of ``repo`` at ``revision``, verified: the listing and each file's path."""
    listed = hub_revision(repo=repo, revision=revision)
    return listed, {
        name: hub_file_download(revision=listed, name=name, progress=progress) for name in names
    }
