"""The pictures of the documentation site, taken by the browser tests: every run keeps them under
test-artifacts/docs-img/; with DOCS_SCREENSHOTS=1 ('make screenshots') they replace the
committed ones in docs/img/. Saved as palette PNGs, so that they stay small in the repository."""

import io
import os

from PIL import Image
from playwright.sync_api import Page

from tests.support.paths import ROOT

DOCS_IMAGES = ROOT / "docs" / "img"
ARTIFACTS = ROOT / "test-artifacts" / "docs-img"


def documentation_picture(page: Page, name: str) -> None:
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    small = shot.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    folders = [ARTIFACTS, DOCS_IMAGES] if os.environ.get("DOCS_SCREENSHOTS") == "1" else [ARTIFACTS]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        small.save(folder / f"{name}.png", optimize=True)
