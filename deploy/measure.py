"""Measure a running classifier container: CPU per request, requests/s, latency, worker RSS.

    python deploy/measure.py CONTAINER PORT [--requests 200] [--concurrency 4]

CONTAINER is a podman container of the image (started with a raised THROTTLE_ANON_RATE, so
the throttle does not answer instead of the model). CPU time is read from the host's
/proc/<pid>/stat of every process in the container (user + system), before and after each
phase, so it counts everything a request costs: HTTP, decoding, inference, the request log.
Phases: uncached (each upload's bytes differ, so every one runs the model) and cached (the
same bytes again: a content-cache hit). docs/scaling.md shows the figures and what follows.
"""

import argparse
import io
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

from PIL import Image


def host_pids(container: str) -> list[int]:
    out = subprocess.run(  # noqa: S603 (a fixed command; the container is our argument)
        ["podman", "top", container, "hpid"],  # noqa: S607 (podman from PATH)
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [int(line) for line in out.split()[1:]]


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def rss_mib(pids: list[int]) -> list[float]:
    sizes = []
    for pid in pids:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
    return sizes


def photo(seed: int) -> bytes:
    import numpy as np
    import skimage.data

    # 451 x 300, a real photograph, with faint noise of its own: other bytes and other pixels
    # (the result cache keys on the image's content and on its decoded pixels).
    noise = np.random.default_rng(seed).integers(-3, 4, size=(300, 451, 3))
    pixels = np.clip(skimage.data.chelsea().astype(int) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def post(port: int, data: bytes) -> float:
    boundary = uuid.uuid4().hex
    body = (
        (
            f"--{boundary}\r\nContent-Disposition: form-data; name=image; filename=a.jpg\r\n"
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/classify-image",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (local)
        response.read()
        assert response.status == 200, response.status
    return time.perf_counter() - started


def phase(name: str, container: str, port: int, bodies: list[bytes], concurrency: int) -> None:
    pids = host_pids(container)
    cpu_before, started = cpu_seconds(pids), time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(lambda body: post(port, body), bodies))
    wall = time.perf_counter() - started
    cpu = cpu_seconds(pids) - cpu_before
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    print(
        f"{name}: {len(bodies)} requests, concurrency {concurrency}: "
        f"{len(bodies) / wall:.1f} req/s, CPU {cpu / len(bodies) * 1000:.1f} ms/request, "
        f"latency p50 {statistics.median(latencies) * 1000:.0f} ms p95 {p95 * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("container")
    parser.add_argument("port", type=int)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    post(args.port, photo(0))  # warm
    rss = [round(r) for r in rss_mib(host_pids(args.container))]
    print(f"RSS before (MiB, master first): {rss}")
    first = int.from_bytes(os.urandom(4), "big")  # seeds no earlier run used: all misses
    uncached = [photo(seed) for seed in range(first, first + args.requests)]
    phase("uncached", args.container, args.port, uncached, args.concurrency)
    phase("cached", args.container, args.port, [photo(0)] * args.requests, args.concurrency)
    rss = [round(r) for r in rss_mib(host_pids(args.container))]
    print(f"RSS after (MiB, master first): {rss}")


if __name__ == "__main__":
    sys.exit(main())
