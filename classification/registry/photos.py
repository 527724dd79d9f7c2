"""Real photographs for calibrating and checking a model version: those that installed wheels
ship (offline, on every machine), or a folder of labelled photos.

The wheel photos are split once, by name, into a calibration set and a held-out set, so a
quantized version is never judged on the photos it was calibrated on. A folder's photos may be
labelled ImageNet-style: the file name (or its folder's) starts with a WordNet id
(``n01443537_2625_goldfish.jpg``), which ``wordnet_ids`` maps to the version's labels.
"""

import hashlib
import importlib.util
import logging
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from classification.exceptions import ModelRegistrationError
from classification.registry.sources.downloads import download_cache, pypi_wheel_any

logger = logging.getLogger(__name__)

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class Photo:
    """A real photograph, opened on demand, and the class it shows when that is known: a label of
    the version, or the index of its output (ImageNet names some classes twice: "crane")."""

    name: str
    path: Path
    label: str | int | None = None

    def open_rgb(self) -> Image.Image:
        with Image.open(self.path) as opened:
            opened.load()
            return opened.convert("RGB")


# (package, path inside it) of each real photograph shipped in a wheel: scikit-image's
# photographs and textures (its drawings, micrographs and binary images left out) and
# matplotlib's sample. The set must not depend on what else is installed: the same photos
# calibrate the same int8 file on every machine (scikit-learn's two samples are left out for
# that reason: it is installed on some machines only).
_WHEEL_PHOTOS = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "brick": ("skimage", "data/brick.png"),
    "camera": ("skimage", "data/camera.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "clock_motion": ("skimage", "data/clock_motion.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "coins": ("skimage", "data/coins.png"),
    "color": ("skimage", "data/color.png"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "moon": ("skimage", "data/moon.png"),
    "motorcycle_left": ("skimage", "data/motorcycle_left.png"),
    "motorcycle_right": ("skimage", "data/motorcycle_right.png"),
    "page": ("skimage", "data/page.png"),
    "retina": ("skimage", "data/retina.jpg"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "text": ("skimage", "data/text.png"),
}
# Held out from calibration: the photographs of one clear subject, on which a quantized version
# is compared with its source. The rest (textures, scenes, documents, a second view of the
# motorcycle) calibrate.
HELD_OUT_WHEEL_PHOTOS = frozenset(
    {"astronaut", "camera", "chelsea", "coffee", "grace_hopper", "motorcycle_left", "rocket"}
)


# Where scikit-image is not installed ('make run' installs the service's requirements only),
# its photographs are taken out of its wheel, downloaded once with pip and never installed.
# Each file is checked against its SHA-256, so a wheel of any platform gives the same photos.
SKIMAGE_REQUIREMENT = "scikit-image==0.26.0"  # the pin of requirements-test.txt (tests hold it)
SKIMAGE_PHOTO_SHA256 = {
    "data/astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "data/brick.png": "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
    "data/camera.png": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
    "data/chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "data/clock_motion.png": "f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955",
    "data/coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "data/coins.png": "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
    "data/color.png": "7d2df993de2b4fa2a78e04e5df8050f49a9c511aa75e59ab3bd56ac9c98aef7e",
    "data/grass.png": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
    "data/gravel.png": "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
    "data/hubble_deep_field.jpg": (
        "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4"
    ),
    "data/moon.png": "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577",
    "data/motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
    "data/motorcycle_right.png": "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797",
    "data/page.png": "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3",
    "data/retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    "data/rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    "data/text.png": "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1",
}


def _installed_file(package: str, relative: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except ImportError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), relative)
    return path if path.is_file() else None


def skimage_photos_unpacked() -> Path:
    """The folder holding scikit-image's photographs taken out of its pinned wheel (downloaded
    and unpacked once, each file checked). Raises ModelRegistrationError."""
    folder = download_cache() / "skimage-photos"
    if all((folder / relative).is_file() for relative in SKIMAGE_PHOTO_SHA256):
        return folder
    wheel = pypi_wheel_any(requirement=SKIMAGE_REQUIREMENT)
    with zipfile.ZipFile(wheel) as archive:
        for relative, sha256 in SKIMAGE_PHOTO_SHA256.items():
            data = archive.read(f"skimage/{relative}")
            if hashlib.sha256(data).hexdigest() != sha256:
                raise ModelRegistrationError(
                    f"{wheel.name} holds a skimage/{relative} that is not the expected photo."
                )
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_bytes(data)
    logger.info("Took scikit-image's photographs out of %s", wheel.name)
    return folder


def _photo_file(package: str, relative: str, *, download: bool) -> Path | None:
    installed = _installed_file(package, relative)
    if installed is not None or package != "skimage" or not download:
        return installed
    return skimage_photos_unpacked() / relative


def wheel_photos(*, held_out: bool | None = None, download: bool = False) -> list[Photo]:
    """The wheel photographs, by name: all of them, or (``held_out`` True or False) only the
    held-out or only the calibration ones. Unlabelled. Those of a package that is not installed
    are left out, unless ``download``: scikit-image's then come from its wheel (pip download)."""
    photos = []
    for name, (package, relative) in sorted(_WHEEL_PHOTOS.items()):
        if held_out is not None and (name in HELD_OUT_WHEEL_PHOTOS) != held_out:
            continue
        path = _photo_file(package, relative, download=download)
        if path is not None:
            photos.append(Photo(name=name, path=path))
    return photos


_WORDNET_ID = re.compile(r"^(n\d{8})(?:[_\-.]|$)")


def folder_photos(
    folder: Path, *, label_of_wordnet_id: Callable[[str], str | int | None] | None = None
) -> list[Photo]:
    """The photos under ``folder`` (recursively, by path), labelled where ``label_of_wordnet_id``
    maps the WordNet id their file or folder name starts with to a label or output index of the
    version (a photo of a class the version does not know keeps no label)."""
    photos = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in PHOTO_SUFFIXES:
            continue
        label: str | int | None = None
        if label_of_wordnet_id is not None:
            for part in (path.name, path.parent.name):
                match = _WORDNET_ID.match(part)
                if match:
                    label = label_of_wordnet_id(match.group(1))
                    break
        photos.append(Photo(name=str(path.relative_to(folder)), path=path, label=label))
    return photos
