"""Large uploads against the real service: eight concurrent 36-megapixel PNGs (about 100 kB
each), which the decode budget keeps under a stated growth per worker; and many large bodies,
which must leave with their requests."""

import concurrent.futures
import functools
import struct
import uuid
import zlib
from pathlib import Path

import pytest

from tests.support.http_client import upload
from tests.support.images import encode, noise_image

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SIDE = 6000  # 36 megapixels
# What one worker may grow above its idle footprint: one 36-megapixel decode at a time (the
# decode budget, 40 megapixels, admits one) at 3 bytes a pixel, plus the crop and conversion
# copies preprocessing makes, about 7 bytes a pixel in all (measured: 250-255 MB; the ImageNet
# model's worker idles at about 165 MB and peaks at about 420). Without the decode budget, or
# with it but glibc's default mmap threshold (freed decodes kept by each thread's arena), a
# worker grows well beyond it; docs/reliability.md has the figures.
BYTES_PER_PIXEL_BOUND = 8
WORKER_GROWTH_MB = BYTES_PER_PIXEL_BOUND * SIDE * SIDE / 1024 / 1024


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@functools.cache
def _same_rows() -> tuple[int, int, bytes]:
    """Rows 2..SIDE, raw and deflated once: each filtered "Up" against the row before, so all
    zeros (a deflate stream that follows a full flush depends on nothing before it)."""
    rows = (b"\x02" + bytes(3 * SIDE)) * (SIDE - 1)
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    return len(rows), zlib.adler32(rows), packer.compress(rows) + packer.flush()


def _adler32_combine(first: int, second: int, second_length: int) -> int:
    """zlib's adler32_combine (Python's zlib does not expose it)."""
    base = 65521
    rem = second_length % base
    sum1 = first & 0xFFFF
    sum2 = (rem * sum1) % base
    sum1 = (sum1 + (second & 0xFFFF) + base - 1) % base
    sum2 = (sum2 + ((first >> 16) & 0xFFFF) + ((second >> 16) & 0xFFFF) + base - rem) % base
    return sum1 | (sum2 << 16)


def large_png(seed: int) -> bytes:
    """A 6000 x 6000 RGB PNG of about 120 kB whose colour depends on ``seed``, written by hand
    in a fraction of the time Pillow's encoder needs."""
    first = b"\x00" + bytes((seed * 20 % 256, 90, 160)) * SIDE
    rows_length, rows_adler, deflated = _same_rows()
    head = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = head.compress(first) + head.flush(zlib.Z_FULL_FLUSH) + deflated
    adler = _adler32_combine(zlib.adler32(first), rows_adler, rows_length)
    idat = b"\x78\x9c" + stream + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", SIDE, SIDE, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


@pytest.fixture(scope="session")
def large_pngs() -> list[bytes]:
    return [large_png(seed) for seed in range(8)]


def worker_memory_mb(master_pid: int, field: str = "VmHWM") -> list[float]:
    """Each worker's peak (VmHWM) or current (VmRSS) resident memory, MB."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    found = []
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                found.append(int(line.split()[1]) / 1024)
    return found


def test_eight_large_uploads_stay_under_the_memory_bound(web_server, tiny_model, large_pngs):
    server = web_server(
        workers=2,
        env={
            "WEB_THREADS": "4",
            "IMAGE_MAX_BYTES": str(20 * 1024 * 1024),
            "CACHE_KEY_PREFIX": f"memory-test-{uuid.uuid4().hex}",  # nothing answered from cache
        },
    )
    # Both workers answered once (each loads its model as it starts), and their peak so far.
    for seed in range(8):
        assert upload(server.url, seed=seed).status == 200
    idle = worker_memory_mb(server.process.pid)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda png: upload(server.url, image=png), large_pngs))
    assert [answer.status for answer in answers] == [200] * 8, [a.body for a in answers]
    peaks = worker_memory_mb(server.process.pid)
    assert len(peaks) == len(idle) == 2
    growth = [peak - before for peak, before in zip(peaks, idle, strict=True)]
    assert max(growth) < WORKER_GROWTH_MB, (idle, peaks)


# A large body: a small JPEG, then bytes after its end marker (decoders ignore them), as the load
# test makes each upload unique. Each upload's bytes differ, so no cache answers.
LARGE_BODY_BYTES = 16 * 1024 * 1024
LARGE_BODY_UPLOADS = 40
# What a worker may keep after them: four bodies' worth (measured: 0-41 MB in six runs). Django's
# request objects form reference cycles, so what they hold waits for the cyclic collector unless
# it is let go when the request ends, and each request thread's serializer fields held its last
# request's data: before, each worker kept 160-290 MB here.
RETAINED_MB_BOUND = 4 * LARGE_BODY_BYTES / 1024 / 1024


def padded_jpeg(seed: int) -> bytes:
    image = encode(noise_image(size=(64, 64), seed=seed), "JPEG")
    return image + bytes([seed % 256]) * (LARGE_BODY_BYTES - len(image))


def test_large_bodies_leave_memory_with_their_requests(web_server, tiny_model):
    server = web_server(
        workers=2,
        env={
            "WEB_THREADS": "8",
            "IMAGE_MAX_BYTES": str(20 * 1024 * 1024),
            "CACHE_KEY_PREFIX": f"memory-test-{uuid.uuid4().hex}",
        },
    )
    for seed in range(8):  # both workers warm, with a few large bodies behind them already
        assert upload(server.url, image=padded_jpeg(1000 + seed)).status == 200
    before = worker_memory_mb(server.process.pid, "VmRSS")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda seed: upload(server.url, image=padded_jpeg(seed)), range(LARGE_BODY_UPLOADS)
            )
        )
    assert [answer.status for answer in answers] == [200] * LARGE_BODY_UPLOADS
    after = worker_memory_mb(server.process.pid, "VmRSS")
    kept = [now - then for now, then in zip(after, before, strict=True)]
    assert max(kept) < RETAINED_MB_BOUND, (before, after)
