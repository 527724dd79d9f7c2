"""int8 against float: LiteRT invoke time of each int8 version and of the float version it was
made from, on 1 and 2 threads, on a real photo prepared as serving prepares it; with the size
of each flat buffer and the int8 version's fidelity report."""

import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from classification.models import ModelVersion
from classification.registry.photos import wheel_photos
from classification.serving.imaging import image_preprocess
from classification.serving.litert import LiteRTClassifier
from classification.store import artifact_read_verified

THREADS = (1, 2)


def _invoke_ms(content: bytes, *, batch: np.ndarray, threads: int, runs: int) -> dict:
    interpreter = LiteRTClassifier(model_content=content, num_threads=threads)
    for _ in range(10):
        interpreter.invoke(batch)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        interpreter.invoke(batch)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "median": round(statistics.median(samples), 3),
        "p95": round(samples[int(0.95 * (len(samples) - 1))], 3),
    }


class Command(BaseCommand):
    help = "Measure LiteRT invoke of each int8 version beside its float version (1 and 2 threads)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--runs", type=int, default=200)
        parser.add_argument("--report", type=Path, default=settings.VAR_DIR / "bench")

    def handle(self, *args: object, runs: int, report: Path, **options: object) -> None:
        quantized = [
            version
            for version in ModelVersion.objects.filter(stage=ModelVersion.Stage.PRODUCTION)
            if version.metrics.get("quantized_from")
        ]
        if not quantized:
            raise CommandError(
                "No int8 version is in production: run 'manage.py quantize_model NAME' first."
            )
        photo = next(p for p in wheel_photos() if p.name == "chelsea")
        results: dict = {"machine": f"{os.cpu_count()} cores", "runs": runs, "models": {}}
        for int8 in quantized:
            source = int8.metrics["quantized_from"]
            fp32 = ModelVersion.objects.get(name=source["name"], version=source["version"])
            batch = image_preprocess(
                image=photo.open_rgb(), input_size=int8.input_size, preprocessing=int8.preprocessing
            )
            figures: dict = {}
            for version in (fp32, int8):
                content = artifact_read_verified(
                    name=version.artifact, sha256=version.artifact_sha256
                )
                figures[f"{version.name} v{version.version}"] = {
                    "size_mb": round(len(content) / 1e6, 1),
                    **{
                        f"invoke_ms_{threads}_thread{'s' if threads > 1 else ''}": _invoke_ms(
                            content, batch=batch, threads=threads, runs=runs
                        )
                        for threads in THREADS
                    },
                }
            figures["fidelity"] = int8.metrics.get("fidelity")
            figures["float_ops"] = int8.metrics.get("quantization", {}).get("float_ops")
            results["models"][int8.name] = figures
            self.stdout.write(f"{int8} against {fp32}: {json.dumps(figures)}")
        report.mkdir(parents=True, exist_ok=True)
        path = report / "quantization.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        self.stdout.write(f"Written to {path}")
