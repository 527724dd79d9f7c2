"""python -m bench observability: what the logs and metrics cost each request (not a test).

Times, per request, what AccessLogMiddleware and the classification path add: the request
counter and histogram, the stage histograms, a cache counter, the prediction counter and
confidence histogram, and one access record formatted as a JSON line. Runs once in this process
(single-process metrics) and once in a child with PROMETHEUS_MULTIPROC_DIR set, as under
gunicorn (values in memory-mapped files).
"""

import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from classification import metrics as classification_metrics
from classification.results import ClassificationResult, Prediction
from core import metrics
from core.logs import JsonLineFormatter, RequestIdFilter


def _one_request(logger: logging.Logger, result: ClassificationResult, index: int) -> None:
    classification_metrics.CACHE_LOOKUPS.labels("image", "miss").inc()
    classification_metrics.classification_observe(result)
    classification_metrics.STAGE_SECONDS.labels("log_write").observe(0.0004)
    metrics.request_observe(
        endpoint="classification:classify-image", method="POST", status=200, seconds=0.012
    )
    logger.info(
        "POST /classify-image 200 12.0 ms",
        extra={
            "request_id": f"bench-{index}",
            "method": "POST",
            "path": "/classify-image",
            "route": "classification:classify-image",
            "status": 200,
            "duration_ms": 12.0,
            "model": "bench",
            "model_version": 1,
            "cache": "miss",
        },
    )


def measure(iterations: int) -> dict[str, float]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("bench.observability.access")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    result = ClassificationResult(
        predictions=[Prediction(label=f"label-{i}", confidence=0.5) for i in range(3)],
        model_name="bench",
        model_version=1,
        image_sha256="0" * 64,
        timings={"cache_lookup": 0.0002, "decode": 0.002, "preprocess": 0.001, "inference": 0.004},
    )
    for index in range(100):  # warm up (label children, files)
        _one_request(logger, result, index)
    samples = []
    for index in range(iterations):
        started = time.perf_counter()
        _one_request(logger, result, index)
        samples.append(time.perf_counter() - started)
        stream.seek(0)
        stream.truncate()
    started = time.perf_counter()
    size = len(metrics.exposition())
    scrape = time.perf_counter() - started
    samples.sort()
    return {
        "per_request_us_median": round(statistics.median(samples) * 1e6, 1),
        "per_request_us_p99": round(samples[int(len(samples) * 0.99)] * 1e6, 1),
        "scrape_ms": round(scrape * 1000, 2),
        "scrape_bytes": size,
    }


class Command(BaseCommand):
    help = "Print what logs and metrics cost per request, in one process and in multiprocess mode."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-n", "--iterations", type=int, default=5000)
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help="Print one JSON object only."
        )

    def handle(self, *args: object, iterations: int, as_json: bool, **options: object) -> None:
        figures = measure(iterations)
        if as_json:
            self.stdout.write(json.dumps(figures))
            return
        mode = "multiprocess" if metrics.multiprocess_dir() else "single-process"
        results = {mode: figures}
        if not metrics.multiprocess_dir():
            with tempfile.TemporaryDirectory(prefix="bench-metrics-") as directory:
                command = ["-m", "bench", "observability", "--json", f"-n={iterations}"]
                child = subprocess.run(  # noqa: S603 (this benchmark again, fixed arguments)
                    [sys.executable, *command],
                    cwd=settings.BASE_DIR,
                    env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results["multiprocess"] = json.loads(child.stdout.strip().splitlines()[-1])
        for name, figures in results.items():
            self.stdout.write(
                f"logs + metrics per request ({name}): median {figures['per_request_us_median']} "
                f"us, p99 {figures['per_request_us_p99']} us; one scrape {figures['scrape_ms']} "
                f"ms ({figures['scrape_bytes']} bytes)"
            )
