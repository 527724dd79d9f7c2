"""Benchmark of the request log and /report (a measurement, not a test).

    DATABASE_URL=postgres://... python -m bench reporting [--rows 1000000]

Prints and writes to var/bench/reporting.json:
- the cost of writing one request log row (what POST /classify-image pays for logging),
- GET /report latency (through the whole Django stack) and the selector alone, with ``--rows``
  log rows in PostgreSQL (the goal is a median under 200 ms with 1,000,000 rows).

The rows go to a separate database (bench_<DATABASE_URL's database>, kept between runs),
never to the service's own data. ``run()`` is the measurement; the command runs it.
"""

import json
import statistics
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection
from django.test import Client
from django.test.utils import setup_test_environment

from classification.results import ClassificationResult, Prediction
from reporting.models import RequestLog
from reporting.selectors import report_top_urls
from reporting.services import RequestOutcome, request_log_record

DISTINCT_URLS = 20_000

# 1,000,000 rows in one statement: skewed URL popularity, 20 % uploads, 8 % errors,
# 30 % cached answers, spread over 30 days.
FILL_SQL = """
INSERT INTO reporting_requestlog (
    created_at, request_id, input_kind, image_url, image_url_sha256, image_url_key,
    image_sha256, model_name,
    model_version, top_label, confidence, processing_time, cached, cache_kind, status_code,
    error_code, user_id, client_hash, exported_at)
SELECT
    now() - (random() * interval '30 days'),
    'bench-' || n,
    CASE WHEN upload THEN 'upload' ELSE 'url' END,
    CASE WHEN upload THEN '' ELSE url END,
    CASE WHEN upload THEN NULL ELSE url_sha256 END,
    CASE WHEN upload THEN NULL ELSE ('x' || left(url_sha256, 16))::bit(64)::bigint END,
    md5(n::text) || md5(n::text),
    'dog-breeds', 1,
    CASE WHEN failed THEN '' ELSE 'label-' || mod(n, 19) END,
    CASE WHEN failed THEN NULL ELSE random() END,
    CASE WHEN cached THEN 0.001 + random() * 0.004 ELSE 0.02 + random() * 0.4 END,
    cached AND NOT failed,
    CASE WHEN cached AND NOT failed THEN 'url' END,
    CASE WHEN failed THEN 422 ELSE 200 END,
    CASE WHEN failed THEN 'undecodable_image' ELSE '' END,
    NULL, md5(mod(n, 5000)::text), now()
FROM (
    SELECT *, encode(sha256(convert_to(url, 'UTF8')), 'hex') AS url_sha256 FROM (
    SELECT n,
           'https://images.example/photos/' || floor(power(random(), 3) * %(urls)s)::int
               || '.jpg' AS url,
           random() < 0.2 AS upload,
           random() < 0.08 AS failed,
           random() < 0.3 AS cached
    FROM generate_series(%(start)s, %(stop)s) AS n
    ) AS drawn
) AS generated
"""


def _ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 3),
        "min_ms": round(ordered[0] * 1000, 3),
        "runs": len(ordered),
    }


def fill(rows: int) -> float:
    present = RequestLog.objects.count()
    started = time.perf_counter()
    with connection.cursor() as cursor:
        step = 250_000
        for start in range(present + 1, rows + 1, step):
            stop = min(start + step - 1, rows)
            cursor.execute(FILL_SQL, {"urls": DISTINCT_URLS, "start": start, "stop": stop})
            print(f"  inserted rows up to {stop:,}", flush=True)
        cursor.execute("VACUUM ANALYZE reporting_requestlog")
    return time.perf_counter() - started


def logging_cost(runs: int) -> dict[str, float]:
    result = ClassificationResult(
        predictions=[Prediction(label="beagle", confidence=0.91)],
        model_name="dog-breeds",
        model_version=1,
        image_sha256="ab" * 32,
        processing_time=0.05,
    )
    timings = []
    for i in range(runs):
        outcome = RequestOutcome(
            request_id=uuid.uuid4().hex,
            status_code=200,
            processing_time=0.05,
            input_kind="url",
            image_url=f"https://images.example/bench/{i % 50}.jpg",
            result=result,
            client_address="192.0.2.7",
        )
        started = time.perf_counter()
        request_log_record(outcome=outcome)
        timings.append(time.perf_counter() - started)
    return _ms(timings)


def report_latency(runs: int) -> tuple[dict[str, float], dict[str, float]]:
    client = Client()
    client.get("/report")  # warm the caches once
    http, selector = [], []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get("/report")
        http.append(time.perf_counter() - started)
        assert response.status_code == 200, response.content
    for _ in range(runs):
        started = time.perf_counter()
        report_top_urls(limit=10)
        selector.append(time.perf_counter() - started)
    return _ms(http), _ms(selector)


def run(*, rows: int = 1_000_000, runs: int = 20, log_runs: int = 2000) -> dict:
    if connection.vendor != "postgresql":
        print("bench_reporting: set DATABASE_URL to PostgreSQL (the figures are for PostgreSQL).")
        return {}
    settings.ELASTICSEARCH_URL = ""  # measure the database, not the export
    setup_test_environment()
    # Its own database, apart from the service's data and from the test suite's.
    connection.settings_dict["TEST"]["NAME"] = f"bench_{connection.settings_dict['NAME']}"
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=True)
    print(f"bench_reporting: database {connection.settings_dict['NAME']}")
    fill_seconds = fill(rows) if RequestLog.objects.count() < rows else 0.0
    total = RequestLog.objects.count()
    log = logging_cost(log_runs)
    # Keep the table at its size for the next run: remove the rows the logging bench added.
    RequestLog.objects.exclude(request_id__startswith="bench-").delete()
    http, selector = report_latency(runs)
    figures = {
        "database": "postgresql",
        "log_rows": total,
        "fill_seconds": round(fill_seconds, 1),
        "request_log_write": log,
        "report_http": http,
        "report_selector": selector,
        "report_goal_ms": 200,
    }
    out = Path(settings.VAR_DIR) / "bench" / "reporting.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"  log rows:                 {total:,}")
    print(f"  request log write:        median {log['median_ms']} ms, p95 {log['p95_ms']} ms")
    print(f"  GET /report (HTTP stack): median {http['median_ms']} ms, p95 {http['p95_ms']} ms")
    print(f"  report_top_urls alone:    median {selector['median_ms']} ms")
    print(f"  written to {out}")
    return figures


class Command(BaseCommand):
    help = "Measure the request log's cost per request and /report latency on PostgreSQL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, default=1_000_000)
        parser.add_argument("--runs", type=int, default=20)

    def handle(self, *args: object, rows: int, runs: int, **options: object) -> None:
        run(rows=rows, runs=runs)
