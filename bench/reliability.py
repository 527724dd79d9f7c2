"""Benchmark of the service under the faults of hostile load (a measurement, not a test).

    [DATABASE_URL=postgres://...] python -m bench reliability

Prints and writes to var/bench/reliability.json:
- the request-path cost of logging a request: the queued row (what a request pays with the
  writer thread) against the direct insert (what it paid before, and pays with
  REQUEST_LOG_QUEUE=0);
- through gunicorn as 'make run' starts it (2 workers x 4 threads), upload latency p50/p99 and
  rows written per request sent: with nothing wrong; while the request-log table is locked for
  5 s (queued writer, then the direct insert for comparison); while 8 image URLs drip 2 bytes a
  second (fetch slots on, then unbounded for comparison), with /health/live latency; and the
  peak memory of the workers under 8 concurrent 36-megapixel PNG uploads.

Redis faults are not measured here: the Redis on this machine is shared with CI, and stopping
it is no benchmark's business (the result-cache tests cover its outages).

Everything runs in a database of its own (bench_reliability_<DATABASE_URL's name>, kept between
runs) with the offline dog-breed model; about two minutes in all.
"""

import concurrent.futures
import contextlib
import http.server
import io
import json
import math
import os
import socketserver
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from PIL import Image

from bench.loopback import database_url, free_port
from reporting.log_writer import RequestLogWriter
from reporting.models import RequestLog
from reporting.services import RequestOutcome, request_log_build, request_log_insert_now

GUNICORN_COMMAND = (
    sys.executable,
    "-m",
    "gunicorn",
    "--config",
    "python:classifier_site.gunicorn",
    "classifier_site.wsgi",
)
LOCK_SECONDS = 5.0
DRIP_SECONDS = 4.0


def _summary(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"runs": 0}
    ordered = sorted(seconds)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[math.ceil(len(ordered) * 0.99) - 1] * 1000, 3),  # nearest rank
        "max_ms": round(ordered[-1] * 1000, 3),
        "runs": len(ordered),
    }


# --- Logging cost on the request path ------------------------------------------------------


def _outcome(index: int) -> RequestOutcome:
    return RequestOutcome(
        request_id=f"bench-cost-{uuid.uuid4().hex}",
        status_code=200,
        processing_time=0.01,
        input_kind="url",
        image_url=f"https://images.example/bench/{index % 50}.jpg",
        client_address="192.0.2.7",
    )


def logging_cost(runs: int) -> dict[str, Any]:
    direct = []
    for index in range(runs):
        started = time.perf_counter()
        request_log_insert_now(row=request_log_build(outcome=_outcome(index)))
        direct.append(time.perf_counter() - started)
    writer = RequestLogWriter()
    settings.REQUEST_LOG_QUEUE = True
    writer.start()
    queued = []
    for index in range(runs):
        started = time.perf_counter()
        writer.put(request_log_build(outcome=_outcome(index)))
        queued.append(time.perf_counter() - started)
    drained = time.perf_counter()
    writer.stop(timeout=30)
    return {
        "direct_insert": _summary(direct),
        "queued": _summary(queued),
        "queue_drain_seconds": round(time.perf_counter() - drained, 3),
        "queued_rows_written": writer.written,
    }


# --- A real server and its clients ---------------------------------------------------------


@contextlib.contextmanager
def _server(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    spill = tempfile.mkdtemp(prefix="bench-spill-")
    environment = {
        **os.environ,
        "DATABASE_URL": database_url(connection.settings_dict),
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "WEB_THREADS": "4",
        "LOG_LEVEL": "WARNING",
        "THROTTLE_ANON_RATE": "100000/minute",
        "IMAGE_FETCH_PRIVATE_ALLOWLIST": "127.0.0.0/8",
        "IMAGE_FETCH_TIMEOUT": str(DRIP_SECONDS),
        "NUM_PROXIES": "1",
        "IMAGE_MAX_BYTES": str(20 * 1024 * 1024),
        "REQUEST_LOG_SPILL_DIR": spill,
        "CACHE_KEY_PREFIX": f"bench-{uuid.uuid4().hex}",
        **env,
    }
    process = subprocess.Popen(  # noqa: S603 (our own gunicorn, fixed arguments)
        [*GUNICORN_COMMAND],
        cwd=settings.BASE_DIR,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while _get(f"{url}/health/live", timeout=1)[0] != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise CommandError("gunicorn did not start; run 'make run' once to see why.")
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        if process.poll() is None:
            process.kill()


def _get(url: str, *, timeout: float = 30) -> tuple[int, float]:
    return _send(url, None, {}, timeout=timeout)[:2]


def _send(
    url: str, data: bytes | None, headers: dict[str, str], *, timeout: float = 30
) -> tuple[int, float, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 (loopback)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, time.perf_counter() - started, response.read()
    except urllib.error.HTTPError as error:
        return error.code, time.perf_counter() - started, error.read()
    except OSError:
        return 0, time.perf_counter() - started, b""


class _Clients:
    """Requests to POST /classify-image, each with an X-Request-ID of this run (for the count
    of rows against requests)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"bench-{uuid.uuid4().hex[:12]}-"
        self.sent = 0
        self._lock = threading.Lock()

    def _id(self) -> str:
        with self._lock:
            self.sent += 1
            return f"{self.prefix}{self.sent}"

    def upload(self, image: bytes) -> tuple[int, float]:
        boundary = uuid.uuid4().hex
        body = (
            (
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="image"; filename="p.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + image
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "X-Request-ID": self._id(),
        }
        return _send(f"{self.url}/classify-image", body, headers)[:2]

    def image_url(self, address: str, client: str) -> tuple[int, float]:
        headers = {
            "Content-Type": "application/json",
            "X-Request-ID": self._id(),
            "X-Forwarded-For": client,
        }
        body = json.dumps({"image_url": address}).encode()
        return _send(f"{self.url}/classify-image", body, headers)[:2]

    def rows(self) -> int:
        return RequestLog.objects.filter(request_id__startswith=self.prefix).count()

    def wait_for_rows(self, timeout: float = 10) -> dict[str, Any]:
        started = time.monotonic()
        while self.rows() < self.sent and time.monotonic() - started < timeout:
            time.sleep(0.1)
        return {
            "requests": self.sent,
            "rows": self.rows(),
            "rows_complete_after_seconds": round(time.monotonic() - started, 2),
        }


def _noise_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def _uploads_while(
    clients: _Clients, running: Callable[[], bool], *, threads: int, seed: int
) -> list[tuple[int, float]]:
    answers: list[tuple[int, float]] = []
    counter = iter(range(seed, seed + 1_000_000))
    lock = threading.Lock()

    def loop() -> None:
        while running():
            with lock:
                image = _noise_png(next(counter))
            answer = clients.upload(image)
            with lock:
                answers.append(answer)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return answers


def _statuses(answers: list[tuple[int, float]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status, _ in answers:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return counts


# --- Faults ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _log_table_locked() -> Iterator[None]:
    """The request-log table locked from a session of our own (as a migration would)."""
    if connection.vendor == "sqlite":
        import sqlite3

        lite = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
        lite.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            lite.execute("ROLLBACK")
            lite.close()
        return
    import psycopg

    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"]
    ) as pg:
        pg.execute("LOCK TABLE reporting_requestlog IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            pg.rollback()


def baseline_and_lock(*, queued: bool) -> dict[str, Any]:
    with _server({"REQUEST_LOG_QUEUE": "1" if queued else "0"}) as (url, _):
        clients = _Clients(url)
        for seed in range(4):
            clients.upload(_noise_png(seed))  # load the model in both workers
        end = time.monotonic() + 4
        baseline = _uploads_while(clients, lambda: time.monotonic() < end, threads=4, seed=100)
        with _log_table_locked():
            end = time.monotonic() + LOCK_SECONDS
            locked = _uploads_while(clients, lambda: time.monotonic() < end, threads=4, seed=10**4)
        counted = clients.wait_for_rows()
    return {
        "uploads": _summary([seconds for _, seconds in baseline]),
        "uploads_while_locked": _summary([seconds for _, seconds in locked]),
        "statuses_while_locked": _statuses(locked),
        **counted,
    }


class _DripHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(1000):  # 2 bytes a second
                self.wfile.write(b"\0\0")
                self.wfile.flush()
                time.sleep(1.0)


class _DripServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def drip(*, bounded: bool) -> dict[str, Any]:
    slots = {} if bounded else {"IMAGE_FETCH_CONCURRENCY": "64", "IMAGE_FETCH_PER_CLIENT": "64"}
    drip_server = _DripServer(("127.0.0.1", 0), _DripHandler)
    threading.Thread(target=drip_server.serve_forever, daemon=True).start()
    try:
        with _server(slots) as (url, _):
            clients = _Clients(url)
            for seed in range(4):
                clients.upload(_noise_png(seed))
            pool = concurrent.futures.ThreadPoolExecutor(8)
            port = drip_server.server_address[1]
            attacks = [
                pool.submit(
                    clients.image_url,
                    f"http://127.0.0.1:{port}/slow{index}.png",
                    f"198.51.100.{index + 1}",
                )
                for index in range(8)
            ]
            time.sleep(0.3)
            end = time.monotonic() + DRIP_SECONDS - 0.5
            probes: list[float] = []

            def probing() -> None:
                while time.monotonic() < end:
                    probes.append(_get(f"{url}/health/live")[1])
                    time.sleep(0.05)

            live = threading.Thread(target=probing)
            live.start()
            uploads = _uploads_while(clients, lambda: time.monotonic() < end, threads=2, seed=50)
            live.join()
            attack_answers = [attack.result() for attack in attacks]
            pool.shutdown()
            counted = clients.wait_for_rows()
    finally:
        drip_server.shutdown()
        drip_server.server_close()
    return {
        "health_live": _summary(probes),
        "uploads": _summary([seconds for _, seconds in uploads]),
        "upload_statuses": _statuses(uploads),
        "image_url_statuses": _statuses(attack_answers),
        **counted,
    }


def _large_png(seed: int, side: int = 6000) -> bytes:
    first = b"\x00" + bytes((seed * 20 % 256, 90, 160)) * side
    rows = (b"\x02" + bytes(3 * side)) * (side - 1)
    data = zlib.compress(first + rows, 6)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def large_uploads() -> dict[str, Any]:
    images = [_large_png(seed) for seed in range(8)]
    with _server({}) as (url, process):
        clients = _Clients(url)
        for seed in range(4):
            clients.upload(_noise_png(seed))
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(clients.upload, images))
        elapsed = time.perf_counter() - started
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        peaks = []
        for pid in children:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(round(int(line.split()[1]) / 1024, 1))
        counted = clients.wait_for_rows()
    return {
        "png_bytes_each": len(images[0]),
        "statuses": _statuses(answers),
        "seconds_for_all_8": round(elapsed, 2),
        "worker_peak_rss_mb": peaks,
        **counted,
    }


class Command(BaseCommand):
    help = "Measure latency, rows per request and memory under the faults of hostile load."

    def handle(self, *args: object, **options: object) -> None:
        db = connection.settings_dict
        if connection.vendor == "sqlite":
            db["TEST"]["NAME"] = str(Path(settings.VAR_DIR) / "bench-reliability.sqlite3")
        else:
            db["TEST"]["NAME"] = f"bench_reliability_{db['NAME']}"
        connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=True)
        call_command("fetch_model", "dog-breeds", "--if-no-production", verbosity=0)
        print(f"bench_reliability: database {connection.settings_dict['NAME']}", flush=True)
        figures: dict[str, Any] = {"database": connection.vendor}
        figures["logging_cost"] = logging_cost(2000)
        cost = figures["logging_cost"]
        print(
            "  request-path logging: direct insert p50 "
            f"{cost['direct_insert']['p50_ms']} ms / p99 {cost['direct_insert']['p99_ms']} ms; "
            f"queued p50 {cost['queued']['p50_ms']} ms / p99 {cost['queued']['p99_ms']} ms",
            flush=True,
        )
        for name, run in (
            ("log_table_locked_queued", lambda: baseline_and_lock(queued=True)),
            ("log_table_locked_direct", lambda: baseline_and_lock(queued=False)),
            ("slow_image_urls_bounded", lambda: drip(bounded=True)),
            ("slow_image_urls_unbounded", lambda: drip(bounded=False)),
            ("large_png_uploads", large_uploads),
        ):
            started = time.monotonic()
            figures[name] = run()
            print(f"  {name} ({time.monotonic() - started:.0f} s): {figures[name]}", flush=True)
        RequestLog.objects.filter(request_id__startswith="bench-").delete()
        out = Path(settings.VAR_DIR) / "bench" / "reliability.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"  written to {out}")
