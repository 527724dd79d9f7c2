"""Real photographs for calibrating and checking a model version: those that installed wheels
ship (offline, on every machine), or a folder of labelled photos.

The wheel photos are split once, by name, into a calibration set and a held-out set, so a
quantized version is never judged on the photos it was calibrated on. A folder's photos may be
labelled ImageNet-style: the file name (or its folder's) starts with a WordNet id
(``n01443537_2625_goldfish.jpg``), which ``wordnet_ids`` maps to the version's labels.
"""

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

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
# photographs and textures (its drawings, micrographs and binary images left out), matplotlib's
# and scikit-learn's samples (scikit-learn's only where it is installed).
_WHEEL_PHOTOS = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "brick": ("skimage", "data/brick.png"),
    "camera": ("skimage", "data/camera.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "clock_motion": ("skimage", "data/clock_motion.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "coins": ("skimage", "data/coins.png"),
    "color": ("skimage", "data/color.png"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
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


def _package_file(package: str, relative: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except ImportError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), relative)
    return path if path.is_file() else None


def wheel_photos(*, held_out: bool | None = None) -> list[Photo]:
    """The wheel photographs installed here, by name: all of them, or (``held_out`` True or
    False) only the held-out or only the calibration ones. Unlabelled."""
    photos = []
    for name, (package, relative) in sorted(_WHEEL_PHOTOS.items()):
        if held_out is not None and (name in HELD_OUT_WHEEL_PHOTOS) != held_out:
            continue
        path = _package_file(package, relative)
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
