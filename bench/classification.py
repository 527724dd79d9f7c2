"""python -m bench classification: how fast classification is on this machine (in make bench).

A benchmark, not a test: for every production model, the bare LiteRT invoke, the in-process
pipeline stage by stage and the HTTP processing_time through gunicorn; the default model's
source artifact in TensorFlow beside it; the result cache's misses and hits over HTTP. It prints
the figures and writes them to var/bench/classification.json.
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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test import override_settings
from PIL import Image

from bench.loopback import serve_files
from classification import selectors
from classification.cache_statistics import CacheStatistics
from classification.models import ModelVersion
from classification.registry.conversion import _tensorflow
from classification.serving.engine import get_runtime
from classification.serving.imaging import image_decode, image_preprocess
from classification.store import artifact_path


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


def _multipart(data: bytes, *, model: str | None = None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    model_part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
        if model
        else ""
    )
    body = (
        model_part.encode()
        + (
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
        production = selectors.model_production_versions()
        if not production:
            raise CommandError("No model is in production: run 'make run' once first.")
        default = production[0]  # the default model comes first
        images = [bench_jpeg(seed) for seed in range(requests)]
        results: dict[str, object] = {
            "default_model": f"{default.name} v{default.version}",
            "machine": f"{os.cpu_count()} cores",
            "litert_num_threads": settings.LITERT_NUM_THREADS,
            "models": {},
        }
        with self._server({}) as url:
            for model_version in production:
                self.stdout.write(f"Model: {model_version}")
                figures = self._model_figures(model_version.name, images=images, url=url)
                results["models"][model_version.name] = figures  # type: ignore[index]
                self.stdout.write(json.dumps(figures["goal"]))

        # The default model's source artifact in TensorFlow, and the result cache over HTTP.
        model = get_runtime().serving_model(default.name)
        batch = np.zeros((1, model.input_size, model.input_size, 3), dtype=np.float32)
        litert_ms = results["models"][default.name]["litert_invoke_ms"]["median"]  # type: ignore[index]
        results["tensorflow_ms_median (why serving uses LiteRT)"] = self._tensorflow_figures(
            default.name, batch, litert_ms=litert_ms
        )
        results["cache"] = self._cache_figures(images[: max(20, requests // 2)])

        report.mkdir(parents=True, exist_ok=True)
        path = report / "classification.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        self.stdout.write(json.dumps(results, indent=2))
        self.stdout.write(f"Written to {path}")

    def _model_figures(self, name: str, *, images: list[bytes], url: str) -> dict:
        """Bare invoke, the in-process stages and HTTP processing_time of one model."""
        model = get_runtime().serving_model(name)
        # 1. Bare LiteRT invoke.
        batch = np.zeros((1, model.input_size, model.input_size, 3), dtype=np.float32)
        for _ in range(10):
            model.classifier.invoke(batch)
        invoke = []
        for _ in images:
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

        # 3. Over HTTP, through gunicorn as 'make run' starts it: uncached uploads.
        processing, round_trip = [], []
        for index, data in enumerate(images):
            # Bytes after the JPEG end marker: never seen before (by any model), never a hit.
            unique = data + index.to_bytes(4, "big") + name.encode()
            timing = self._timed_post(url, image=unique, model=name)
            processing.append(timing[0])
            round_trip.append(timing[1])
        budget = 2 * (statistics.median(invoke) + statistics.median(stages["decode"]))
        return {
            "input_size": model.input_size,
            "litert_invoke_ms": {
                "median": _ms(statistics.median(invoke)),
                "p95": _ms(_percentile(invoke, 95)),
            },
            "pipeline_ms_median": {k: _ms(statistics.median(v)) for k, v in stages.items()},
            "http_uncached_upload_640x480": {
                "requests": len(processing),
                "processing_time_ms_median": _ms(statistics.median(processing)),
                "processing_time_ms_p95": _ms(_percentile(processing, 95)),
                "round_trip_ms_median": _ms(statistics.median(round_trip)),
            },
            "goal": {
                "model": name,
                "median_processing_time_ms": _ms(statistics.median(processing)),
                "limit_ms (2 x (invoke + decode))": _ms(budget),
                "met": statistics.median(processing) <= budget,
            },
        }

    @staticmethod
    def _tensorflow_figures(name: str, batch: np.ndarray, *, litert_ms: float) -> dict[str, float]:
        """The same model's source artifact in TensorFlow: tf.function and model.predict."""
        model_version = selectors.model_version_production(name=name)
        if model_version is None or model_version.source_format != ModelVersion.Format.KERAS:
            return {}
        tf = _tensorflow()
        keras_model = tf.keras.models.load_model(
            str(artifact_path(model_version.source_artifact)), compile=False
        )
        call = tf.function(lambda x: keras_model(x, training=False))
        figures = {}
        for name, run in {
            "tf_function": lambda: call(batch),
            "model_predict": lambda: keras_model.predict(batch, verbose=0),
        }.items():
            for _ in range(5):
                run()
            samples = []
            for _ in range(50):
                started = time.perf_counter()
                run()
                samples.append(time.perf_counter() - started)
            figures[name] = _ms(statistics.median(samples))
            figures[f"{name} / litert"] = round(figures[name] / litert_ms, 1)
        return figures

    def _cache_figures(self, images: list[bytes]) -> dict:
        files = {f"/{i}.jpg": data for i, data in enumerate(images)}
        copies = {f"/copy-{i}.jpg": data for i, data in enumerate(images)}
        backends = {
            # Local memory is per process: one worker, so that a repeat reaches the same cache.
            "local-memory": {"REDIS_URL": "", "WEB_CONCURRENCY": "1"},
            "redis": {
                "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
                "CACHE_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
            },
        }
        figures: dict[str, dict] = {"counter_cost_us_median": self._counter_cost(backends)}
        with serve_files({**files, **copies}, content_type="image/jpeg") as server:
            base = server.url
            for backend, env in backends.items():
                env = {**env, "IMAGE_FETCH_PRIVATE_ALLOWLIST": "127.0.0.0/8"}
                runs: dict[str, list[tuple[float, float]]] = {
                    "miss": [],
                    "url_hit": [],
                    "content_hit": [],
                }
                with self._server(env) as url:
                    for name in files:  # first sight of each URL and of its bytes
                        runs["miss"].append(self._timed_post(url, image_url=base + name))
                    for name in files:  # the same URLs again
                        runs["url_hit"].append(self._timed_post(url, image_url=base + name))
                    for name in copies:  # new URLs serving bytes already seen
                        runs["content_hit"].append(self._timed_post(url, image_url=base + name))
                figures[backend] = {
                    kind: {
                        "requests": len(timings),
                        "processing_time_ms_median": _ms(statistics.median(t[0] for t in timings)),
                        "round_trip_ms_median": _ms(statistics.median(t[1] for t in timings)),
                    }
                    for kind, timings in runs.items()
                }
                miss = figures[backend]["miss"]["processing_time_ms_median"]
                hit = figures[backend]["url_hit"]["processing_time_ms_median"]
                figures[backend]["goal: url hit under 5% of a miss"] = {
                    "ratio": round(hit / miss, 4) if miss else None,
                    "met": hit < 0.05 * miss,
                }
        return figures

    @staticmethod
    def _counter_cost(backends: dict[str, dict[str, str]]) -> dict[str, float]:
        """What counting one hit or miss costs a request, per backend, in microseconds."""
        costs = {}
        for backend, env in backends.items():
            redis_url = env.get("REDIS_URL")
            caches_setting = {
                "default": {
                    "BACKEND": "django_redis.cache.RedisCache",
                    "LOCATION": redis_url,
                    "KEY_PREFIX": env.get("CACHE_KEY_PREFIX", "bench"),
                    "OPTIONS": {"SERIALIZER": "django_redis.serializers.json.JSONSerializer"},
                }
                if redis_url
                else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
            }
            with override_settings(CACHES=caches_setting):
                counters = CacheStatistics()
                samples = []
                for _ in range(500):
                    started = time.perf_counter()
                    counters.count(kind="image", hit=False)
                    samples.append(time.perf_counter() - started)
                counters.reset()
            costs[backend] = round(statistics.median(samples) * 1e6, 1)
        return costs

    @contextlib.contextmanager
    def _server(self, env: dict[str, str]) -> Iterator[str]:
        """gunicorn as 'make run' starts it, on a spare loopback port, with ``env`` added."""
        with contextlib.closing(socket.socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        environment = {
            **os.environ,
            "PORT": str(port),
            "LOG_LEVEL": "WARNING",
            # One client sends every request: the anonymous rate limit would measure itself.
            "THROTTLE_ANON_RATE": "1000000/minute",
            **env,
        }
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
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/classify-image"
        try:
            self._wait_for(port, server)
            warm_up = bench_jpeg(seed=10_000)
            for index in range(10):  # every worker loads its model before timing starts
                self._post(url, image=warm_up + index.to_bytes(4, "big"))
            yield url
        finally:
            server.terminate()
            server.wait(timeout=20)

    def _timed_post(
        self,
        url: str,
        *,
        image: bytes | None = None,
        image_url: str | None = None,
        model: str | None = None,
    ) -> tuple[float, float]:
        """(processing_time, round trip) of one request, in seconds."""
        started = time.perf_counter()
        answer = self._post(url, image=image, image_url=image_url, model=model)
        return answer["processing_time"], time.perf_counter() - started

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
    def _post(
        url: str,
        *,
        image: bytes | None = None,
        image_url: str | None = None,
        model: str | None = None,
    ) -> dict:
        if image is not None:
            body, content_type = _multipart(image, model=model)
        else:
            fields = {"image_url": image_url, **({"model": model} if model else {})}
            body, content_type = json.dumps(fields).encode(), "application/json"
        headers = {"Content-Type": content_type}
        request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310 (loopback)
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.load(response)
