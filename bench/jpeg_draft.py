"""python -m bench jpeg_draft: JPEG draft decoding (IMAGE_JPEG_DRAFT) against a full decode.

A benchmark, not a test (in make bench): on real photos, for every photo and model it compares
the answers and the model input of a draft decode with those of a full decode, and the CPU time
of decode + preprocess, then prints a table and writes var/bench/jpeg_draft.json.

The photos are the real ones shipped inside installed wheels (scikit-image, matplotlib and,
when installed, scikit-learn); nothing is downloaded. They are small (at most 1411 pixels a
side), so each is also upscaled 2x and 3x (LANCZOS, JPEG quality 90) to stand in for camera-size
photos: upscaled photos are smoother than a camera's, which favours the draft decode.

Each model is drafted with the margin its version records (``jpeg_draft_margin``), else with
JPEG_DRAFT_MARGIN to show what it would do. These 14 photos carry no labels: they show pixels
and probabilities photo by photo, not accuracy. Which versions record a margin is decided by
accuracy on labelled photos (``manage.py evaluate_model --draft``, docs/performance.md).
"""

import importlib.util
import io
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from PIL import Image

from classification.serving.engine import ServingModel, get_runtime
from classification.serving.imaging import (
    DEFAULT_PREPROCESSING,
    DRAFT_MARGIN_OPTION,
    JPEG_DRAFT_MARGIN,
    image_decode,
    image_preprocess,
    jpeg_draft_margin,
)

DEFAULT_MODELS = ("imagenet-lite0", "dog-breeds")
# skimage.data's photographs (the rest of its files are textures, drawings and micrographs).
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "motorcycle_left.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",
)
UPSCALES = (2, 3)
JPEG_QUALITY = 90
# Reported, not a decision (that takes labelled photos): whether every drafted photo kept its
# top-1 answer and no probability moved by this much.
MAX_PROBABILITY_DIFFERENCE = 0.02


def _margin(model: ServingModel) -> float:
    return jpeg_draft_margin(model.preprocessing) or JPEG_DRAFT_MARGIN


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes  # JPEG bytes
    size: tuple[int, int]


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.is_file() else None


def _photo_files() -> list[tuple[str, Path]]:
    """The real photographs inside installed packages, by name."""
    candidates: list[tuple[str, tuple[str, ...]]] = [
        (name.rsplit(".", 1)[0], ("skimage", "data", name)) for name in SKIMAGE_PHOTOS
    ]
    candidates += [
        ("grace_hopper", ("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")),
        ("china", ("sklearn", "datasets", "images", "china.jpg")),
        ("flower", ("sklearn", "datasets", "images", "flower.jpg")),
    ]
    found = []
    for name, (package, *parts) in candidates:
        path = _package_file(package, *parts)
        if path is not None:
            found.append((name, path))
    return found


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def photos(upscales: tuple[int, ...] = UPSCALES) -> list[Photo]:
    """Each photo as a JPEG (as shipped, or encoded at quality 90), and upscaled by each factor."""
    found = []
    for name, path in _photo_files():
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("L" if opened.mode in ("L", "I;16", "I") else "RGB")
            if opened.format != "JPEG":
                data = _jpeg(image)
        found.append(Photo(name=name, data=data, size=image.size))
        for factor in upscales:
            size = (image.width * factor, image.height * factor)
            upscaled = image.resize(size, resample=Image.Resampling.LANCZOS)
            found.append(Photo(name=f"{name} x{factor}", data=_jpeg(upscaled), size=size))
    return found


def _prepared(photo: Photo, model: ServingModel, *, draft: bool) -> tuple[np.ndarray, int]:
    decoded = image_decode(
        data=photo.data,
        max_pixels=settings.IMAGE_MAX_PIXELS,
        input_size=model.input_size if draft else None,
        preprocessing={**model.preprocessing, DRAFT_MARGIN_OPTION: _margin(model)},
    )
    batch = image_preprocess(
        image=decoded.image, input_size=model.input_size, preprocessing=model.preprocessing
    )
    return batch, decoded.draft_scale


def _cpu_ms(photo: Photo, model: ServingModel, *, draft: bool, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.process_time()
        _prepared(photo, model, draft=draft)
        samples.append(time.process_time() - started)
    return round(statistics.median(samples) * 1000, 2)


def _pixel_levels(model: ServingModel) -> float:
    """How many 0-255 pixel levels one unit of the model input is."""
    options = {**DEFAULT_PREPROCESSING, **model.preprocessing}
    low, high = (float(bound) for bound in options["scale"])
    std = float(np.mean(options.get("std", [1.0])))
    return 255.0 / (high - low) * std


def compare(photo: Photo, model: ServingModel, *, repeats: int) -> dict:
    """Draft decode against full decode of ``photo`` for ``model``."""
    full, _ = _prepared(photo, model, draft=False)
    drafted, scale = _prepared(photo, model, draft=True)
    p_full, p_draft = model.probabilities(full), model.probabilities(drafted)
    top5_full = np.argsort(-p_full, kind="stable")[:5]
    top5_draft = np.argsort(-p_draft, kind="stable")[:5]
    pixels = np.abs(full.astype(np.float64) - drafted) * _pixel_levels(model)
    cpu_off = _cpu_ms(photo, model, draft=False, repeats=repeats)
    cpu_on = _cpu_ms(photo, model, draft=True, repeats=repeats) if scale > 1 else cpu_off
    return {
        "photo": photo.name,
        "size": f"{photo.size[0]}x{photo.size[1]}",
        "jpeg_bytes": len(photo.data),
        "draft_scale": scale,
        "top1_off": model.labels[int(top5_full[0])],
        "top1_on": model.labels[int(top5_draft[0])],
        "top1_probability_off": round(float(p_full[top5_full[0]]), 4),
        "top1_agrees": bool(top5_full[0] == top5_draft[0]),
        "top5_overlap": len(set(top5_full.tolist()) & set(top5_draft.tolist())),
        "max_probability_difference": round(float(np.max(np.abs(p_full - p_draft))), 5),
        "pixel_difference_mean": round(float(pixels.mean()), 3),
        "pixel_difference_max": round(float(pixels.max()), 2),
        "cpu_ms_off": cpu_off,
        "cpu_ms_on": cpu_on,
    }


def summary(rows: list[dict]) -> dict:
    drafted = [row for row in rows if row["draft_scale"] > 1]
    if not drafted:
        return {"photos": len(rows), "drafted": 0}
    return {
        "photos": len(rows),
        "drafted": len(drafted),
        "top1_agreement": round(sum(row["top1_agrees"] for row in drafted) / len(drafted), 4),
        "top5_overlap_mean": round(statistics.mean(row["top5_overlap"] for row in drafted), 2),
        "max_probability_difference": max(row["max_probability_difference"] for row in drafted),
        "pixel_difference_mean": round(
            statistics.mean(row["pixel_difference_mean"] for row in drafted), 3
        ),
        "pixel_difference_max": max(row["pixel_difference_max"] for row in drafted),
        "cpu_ms_off_total": round(sum(row["cpu_ms_off"] for row in drafted), 1),
        "cpu_ms_on_total": round(sum(row["cpu_ms_on"] for row in drafted), 1),
    }


class Command(BaseCommand):
    help = "Compare JPEG draft decoding with a full decode on real photos: answers, pixels, CPU."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
        parser.add_argument("--repeats", type=int, default=5)
        parser.add_argument("--report", type=Path, default=settings.VAR_DIR / "bench")

    def handle(
        self, *args: object, models: list[str], repeats: int, report: Path, **_: object
    ) -> None:
        found = photos()
        if not found:
            raise CommandError("No photo found: install requirements-test.txt (scikit-image).")
        results: dict = {
            "photos": "real photos from installed wheels; 'xN': upscaled N times (LANCZOS), "
            f"JPEG quality {JPEG_QUALITY}",
            "draft_margin": f"the version's jpeg_draft_margin, else {JPEG_DRAFT_MARGIN:g}",
            "cpu": f"time.process_time of decode + preprocess, median of {repeats}",
            "pixel_difference": "model input, in 0-255 levels",
            "models": {},
        }
        for name in models:
            model = get_runtime().serving_model(name)
            self.stdout.write(
                f"\n{model.name} v{model.version} ({model.input_size} px, {model.preprocessing})"
            )
            rows = [compare(photo, model, repeats=repeats) for photo in found]
            self._table(rows)
            figures = summary(rows)
            self.stdout.write(json.dumps(figures))
            results["models"][name] = {"version": model.version, "rows": rows, "summary": figures}

        summaries = [entry["summary"] for entry in results["models"].values()]
        drafted = [s for s in summaries if s["drafted"]]
        keeps = bool(drafted) and all(
            s["top1_agreement"] == 1.0
            and s["max_probability_difference"] < MAX_PROBABILITY_DIFFERENCE
            for s in drafted
        )
        results["all_kept"] = keeps
        results["kept"] = (
            "every drafted photo keeps its top-1 answer and no probability moves by "
            f"{MAX_PROBABILITY_DIFFERENCE} or more (the decision is evaluate_model --draft's)"
        )
        self.stdout.write(f"\nDraft decoding {'keeps' if keeps else 'misses'}: {results['kept']}.")
        report.mkdir(parents=True, exist_ok=True)
        path = report / "jpeg_draft.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        self.stdout.write(f"Written to {path}")

    def _table(self, rows: list[dict]) -> None:
        header = (
            f"{'photo':<22}{'size':>11}{'draft':>6}  {'top-1 full (p) -> draft':<44}{'top5':>5}"
            f"{'max|dp|':>9}{'px mean':>8}{'px max':>7}{'cpu full':>9}{'draft':>7}"
        )
        self.stdout.write(header)
        for row in rows:
            answer = f"{row['top1_off']} ({row['top1_probability_off']:.2f})"
            if not row["top1_agrees"]:
                answer += f" -> {row['top1_on']}"
            scale = f"1/{row['draft_scale']}" if row["draft_scale"] > 1 else "-"
            self.stdout.write(
                f"{row['photo']:<22}{row['size']:>11}{scale:>6}  {answer[:43]:<44}"
                f"{row['top5_overlap']:>5}{row['max_probability_difference']:>9.4f}"
                f"{row['pixel_difference_mean']:>8.2f}{row['pixel_difference_max']:>7.0f}"
                f"{row['cpu_ms_off']:>9.1f}{row['cpu_ms_on']:>7.1f}"
            )
