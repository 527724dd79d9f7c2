"""python -m bench zero_shot: zero-shot (CLIP) serving costs, written to var/bench/zero_shot.json.

A benchmark, not a test (in make bench). It measures a registered zero-shot version
(``--model NAME``, its production version), or else the tiny CLIP the tests build (trained for
a few seconds, registered as a staging version of ``bench-tiny-clip``): no download either way.
Figures are medians in milliseconds.
"""

import io
import json
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from PIL import Image

from classification import selectors
from classification.models import ModelVersion
from classification.registry.clip import median_ms
from classification.registry.sources.tiny_clip import (
    tiny_clip_register,
)
from classification.serving.engine import serving_model_load
from classification.serving.services import serving_model_classify

# ViT-B/32 image encoder: ~4.4 GFLOPs per 224 x 224 image (multiply-adds counted twice).
VIT_B32_IMAGE_GFLOPS = 4.4


def _tiny_clip_version() -> ModelVersion:
    return tiny_clip_register(
        name="bench-tiny-clip", source="the tests' tiny CLIP (python -m bench zero_shot)"
    )


class Command(BaseCommand):
    help = "Measure zero-shot serving: encoders, and requests with stored, fresh and cached labels."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", help="A zero-shot model name (default: the tiny CLIP).")
        parser.add_argument("--runs", type=int, default=30)
        parser.add_argument("--report", type=Path, default=settings.VAR_DIR / "bench")

    def handle(self, *args: object, **options: object) -> None:
        name = options["model"]
        if name:
            version = selectors.model_version_production(name=str(name))
            if version is None or version.kind != ModelVersion.Kind.ZERO_SHOT:
                raise CommandError(f"{name!r} has no zero-shot version in production.")
        else:
            version = _tiny_clip_version()
        model = serving_model_load(version)
        servable = model.servable
        runs = int(options["runs"])  # type: ignore[call-overload]
        size = model.input_size
        rng = np.random.default_rng(0)
        photo = Image.fromarray(rng.integers(0, 255, (size * 2, size * 3, 3), dtype=np.uint8))
        buffer = io.BytesIO()
        photo.save(buffer, format="PNG")
        image = buffer.getvalue()
        batch = np.zeros((1, size, size, 3), dtype=np.float32)
        ids = np.zeros((1, 77), dtype=np.int32)

        counter = iter(range(10**9))

        def fresh_labels() -> list[str]:
            run = next(counter)
            return [f"object {run} number {i}" for i in range(100)]

        cached = [f"cached object {i}" for i in range(100)]
        serving_model_classify(model=model, image_bytes=image, top_k=5, labels=cached)
        figures = {
            "model": f"{version.name} v{version.version}",
            "input_size": size,
            "embedding_dim": servable.spec.embedding_dim,  # type: ignore[attr-defined]
            "image_encoder_invoke_ms": median_ms(
                lambda: servable.interpreter.invoke(batch),  # type: ignore[attr-defined]
                runs,
            ),
            "text_encoder_invoke_ms_per_label": median_ms(
                lambda: servable.text_interpreter.invoke(ids),  # type: ignore[attr-defined]
                runs,
            ),
            "request_registration_labels_ms": median_ms(
                lambda: serving_model_classify(model=model, image_bytes=image, top_k=5), runs
            ),
            "request_100_fresh_labels_ms": median_ms(
                lambda: serving_model_classify(
                    model=model, image_bytes=image, top_k=5, labels=fresh_labels()
                ),
                max(3, runs // 5),
            ),
            "request_100_cached_labels_ms": median_ms(
                lambda: serving_model_classify(
                    model=model, image_bytes=image, top_k=5, labels=cached
                ),
                runs,
            ),
            "note": (
                "Uncached pipeline (decode, preprocess, encoders, scores), no HTTP. ViT-B/32's "
                f"image encoder costs ~{VIT_B32_IMAGE_GFLOPS} GFLOPs per image; at the "
                "measured rate of a CPU core (tens of GFLOP/s with XNNPACK) expect tens of "
                "milliseconds per image; a fresh label costs about as much again (~6 GFLOPs: 77 "
                "tokens through a 38 M-parameter text transformer), a cached label nothing."
            ),
        }
        report: Path = options["report"]  # type: ignore[assignment]
        report.mkdir(parents=True, exist_ok=True)
        path = report / "zero_shot.json"
        path.write_text(json.dumps(figures, indent=2) + "\n")
        self.stdout.write(json.dumps(figures, indent=2))
        self.stdout.write(f"Written to {path}")
