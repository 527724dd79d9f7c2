"""make bench: how fast classification is on this machine, printed and written to a report.

A benchmark, not a test: it prints figures and writes them to var/bench/classification.json.
"""

import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from PIL import Image

from classification.engine import get_runtime
from classification.imaging import image_decode, image_preprocess


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def bench_jpeg(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A photo-like 640 x 480 JPEG (smooth gradients plus noise), different for each seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([x * 255 / size[0], y * 255 / size[1], (x + y) * 127 / sum(size)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="b.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


class Command(BaseCommand):
    help = "Measure LiteRT invoke, the in-process pipeline and HTTP processing_time."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--requests", type=int, default=200)
        parser.add_argument("--report", type=Path, default=settings.VAR_DIR / "bench")

    def handle(self, *args: object, requests: int, report: Path, **options: object) -> None:
        model = get_runtime().serving_model()
        self.stdout.write(f"Model: {model.name} v{model.version}, input {model.input_size}px")
        images = [bench_jpeg(seed) for seed in range(requests)]
        results: dict[str, object] = {
            "model": f"{model.name} v{model.version}",
            "machine": f"{os.cpu_count()} cores",
            "litert_num_threads": settings.LITERT_NUM_THREADS,
        }

        # 1. Bare LiteRT invoke of the production model.
        batch = np.zeros((1, model.input_size, model.input_size, 3), dtype=np.float32)
        for _ in range(10):
            model.classifier.invoke(batch)
        invoke = []
        for _ in range(requests):
            started = time.perf_counter()
            model.classifier.invoke(batch)
            invoke.append(time.perf_counter() - started)

        # 2. The in-process pipeline, stage by stage, on 640 x 480 JPEGs.
        stages: dict[str, list[float]] = {"decode": [], "preprocess": [], "inference": []}
        for data in images:
            mark = time.perf_counter()
            decoded = image_decode(data=data, max_pixels=settings.IMAGE_MAX_PIXELS)
            stages["decode"].append(time.perf_counter() - mark)
            mark = time.perf_counter()
            prepared = image_preprocess(
                image=decoded.image, input_size=model.input_size, preprocessing=model.preprocessing
            )
            stages["preprocess"].append(time.perf_counter() - mark)
            mark = time.perf_counter()
            model.probabilities(prepared)
            stages["inference"].append(time.perf_counter() - mark)

        results["litert_invoke_ms"] = {
            "median": _ms(statistics.median(invoke)),
            "p95": _ms(_percentile(invoke, 95)),
        }
        results["pipeline_ms_median"] = {k: _ms(statistics.median(v)) for k, v in stages.items()}

        # 3. Over HTTP, through gunicorn as 'make run' starts it: uncached uploads.
        processing, round_trip = self._http(images)
        results["http_uncached_upload_640x480"] = {
            "requests": len(processing),
            "processing_time_ms_median": _ms(statistics.median(processing)),
            "processing_time_ms_p95": _ms(_percentile(processing, 95)),
            "round_trip_ms_median": _ms(statistics.median(round_trip)),
        }
        budget = 2 * (statistics.median(invoke) + statistics.median(stages["decode"]))
        results["goal"] = {
            "median_processing_time_ms": _ms(statistics.median(processing)),
            "limit_ms (2 x (invoke + decode))": _ms(budget),
            "met": statistics.median(processing) <= budget,
        }

        report.mkdir(parents=True, exist_ok=True)
        path = report / "classification.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        self.stdout.write(json.dumps(results, indent=2))
        self.stdout.write(f"Written to {path}")

    def _http(self, images: list[bytes]) -> tuple[list[float], list[float]]:
        with contextlib.closing(socket.socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "PORT": str(port), "LOG_LEVEL": "WARNING"}
        # Our own gunicorn with fixed arguments, on a loopback port.
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "python:classifier_site.gunicorn",
                "--access-logfile",
                "/dev/null",
                "classifier_site.wsgi",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/classify-image"
        try:
            self._wait_for(port, server)
            for data in images[:10]:  # warm every worker up
                self._post(url, data)
            processing, round_trip = [], []
            for index, data in enumerate(images):
                # Four bytes after the JPEG end marker: bytes never seen before, never a cache hit.
                unique = data + index.to_bytes(4, "big")
                started = time.perf_counter()
                answer = self._post(url, unique)
                round_trip.append(time.perf_counter() - started)
                processing.append(answer["processing_time"])
            return processing, round_trip
        finally:
            server.terminate()
            server.wait(timeout=20)

    @staticmethod
    def _wait_for(port: int, server: subprocess.Popen) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise CommandError("gunicorn exited; run 'make run' once to see why.")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return
            time.sleep(0.1)
        raise CommandError("gunicorn did not start within 30 s.")

    @staticmethod
    def _post(url: str, data: bytes) -> dict:
        body, content_type = _multipart(data)
        headers = {"Content-Type": content_type}
        request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310 (loopback)
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.load(response)
