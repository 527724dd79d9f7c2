"""The wheel photos: where scikit-image is not installed (the environment 'make run' builds),
its photographs come out of its pinned wheel, each file checked, so calibration sees the same
bytes everywhere."""

import zipfile
from pathlib import Path

import pytest
import skimage

from classification.exceptions import ModelRegistrationError
from classification.registry import photos
from classification.registry.photos import (
    SKIMAGE_PHOTO_SHA256,
    SKIMAGE_REQUIREMENT,
    wheel_photos,
)
from tests.support.paths import ROOT

INSTALLED = Path(skimage.__file__).parent


@pytest.fixture
def without_scikit_image(settings, tmp_path, monkeypatch) -> Path:
    """scikit-image out of sight and an empty download cache; returns the cache."""
    settings.MODEL_DOWNLOAD_CACHE = tmp_path
    installed = photos._installed_file
    monkeypatch.setattr(
        photos,
        "_installed_file",
        lambda package, relative: None if package == "skimage" else installed(package, relative),
    )
    return tmp_path


def _wheel(cache: Path, *, tamper: str | None = None) -> Path:
    """A wheel of the pinned version in the download cache, as pip download leaves it (built
    here from the installed files, which are the wheel's own)."""
    version = SKIMAGE_REQUIREMENT.partition("==")[2]
    wheel = cache / f"scikit_image-{version}-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for relative in SKIMAGE_PHOTO_SHA256:
            data = (INSTALLED / relative).read_bytes()
            archive.writestr(f"skimage/{relative}", data + (b"x" if relative == tamper else b""))
    return wheel


def test_the_pinned_wheel_is_the_test_requirement():
    assert SKIMAGE_REQUIREMENT in (ROOT / "requirements-test.txt").read_text().splitlines()


def test_the_installed_photos_are_the_checked_ones():
    import hashlib

    for relative, sha256 in SKIMAGE_PHOTO_SHA256.items():
        assert hashlib.sha256((INSTALLED / relative).read_bytes()).hexdigest() == sha256


def test_without_scikit_image_its_photos_come_out_of_its_wheel(without_scikit_image):
    assert [photo.name for photo in photos.wheel_photos()] == ["grace_hopper"]  # matplotlib's
    _wheel(without_scikit_image)
    unpacked = wheel_photos(download=True)
    assert sorted(photo.name for photo in unpacked) == sorted(photos._WHEEL_PHOTOS)
    for photo in unpacked:
        if photo.name != "grace_hopper":  # the same bytes as the installed files
            assert without_scikit_image in photo.path.parents
            relative = photo.path.relative_to(without_scikit_image / "skimage-photos")
            assert photo.path.read_bytes() == (INSTALLED / relative).read_bytes()
    assert {p.name for p in wheel_photos(held_out=True, download=True)} == set(
        photos.HELD_OUT_WHEEL_PHOTOS
    )


def test_a_wheel_with_another_photo_is_refused(without_scikit_image):
    _wheel(without_scikit_image, tamper="data/chelsea.png")
    with pytest.raises(ModelRegistrationError, match="chelsea"):
        wheel_photos(download=True)
