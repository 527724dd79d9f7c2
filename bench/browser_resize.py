"""python -m bench browser_resize: the upload page's resize before upload, on labelled photos.

A measurement for a developer's machine (not in make bench, not in CI: it needs labelled photos
and Chromium). Each photo of --photos (ImageNet photos whose file names start with their WordNet
id) is upscaled to about 12 megapixels (LANCZOS, JPEG quality 92: a camera-size stand-in,
written to a temporary folder and deleted), then classified twice by the service this checkout
runs (gunicorn on a loopback port):

- through the upload page in headless Chromium (Playwright), which resizes it before upload;
- through POST /classify-image with the original file (the server-side path: draft decoding).

It reports the top-1 agreement of the two, the top-1 accuracy of each, and the mean bytes sent,
and writes var/bench/browser_resize.json.
"""

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from PIL import Image

from bench.classification import _multipart
from classification.registry.photos import Photo, folder_photos
from classification.registry.sources.efficientnet_lite import NUM_CLASSES, imagenet_wordnet_ids
from classification.selectors import model_version_production

MEGAPIXELS = 12.0
JPEG_QUALITY = 92
# The size of the image the page sends (its FormData part), kept by a wrapper of fetch: the
# request's own body size is not reported for a multipart body holding a blob.
_RECORD_SENT = """
const send = window.fetch;
window.fetch = (url, init) => {
  const image = init && init.body instanceof FormData ? init.body.get("image") : null;
  window.__sentBytes = image ? image.size : null;
  return send(url, init);
};
"""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def camera_size(path: Path, target: Path, *, megapixels: float = MEGAPIXELS) -> tuple[int, int]:
    """``path`` upscaled to about ``megapixels`` (aspect kept), as a JPEG at ``target``."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
    size = (round(image.width * scale), round(image.height * scale))
    image.resize(size, resample=Image.Resampling.LANCZOS).save(target, "JPEG", quality=JPEG_QUALITY)
    return size


def summary(rows: list[dict]) -> dict:
    labelled = [row for row in rows if row["label"] is not None]
    return {
        "photos": len(rows),
        "labelled": len(labelled),
        "top1_agreement": round(sum(r["agree"] for r in rows) / len(rows), 4),
        "top1_accuracy_browser": round(
            sum(r["browser"] == r["label"] for r in labelled) / max(1, len(labelled)), 4
        ),
        "top1_accuracy_server": round(
            sum(r["server"] == r["label"] for r in labelled) / max(1, len(labelled)), 4
        ),
        "mean_original_bytes": round(statistics.mean(r["original_bytes"] for r in rows)),
        "mean_sent_bytes": round(statistics.mean(r["sent_bytes"] for r in rows)),
        "max_sent_bytes": max(r["sent_bytes"] for r in rows),
        "resized": sum(r["resized"] for r in rows),
    }


class Command(BaseCommand):
    help = (
        "The upload page's resize before upload on labelled camera-size photos (a dev machine's "
        "measurement): top-1 agreement with the server-side path, top-1 accuracy, bytes sent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--photos", type=Path, required=True, help="labelled ImageNet photos")
        parser.add_argument("--limit", type=int, default=250, help="photos, spread over the set")
        parser.add_argument("--model", default="imagenet-lite0")
        parser.add_argument("--port", type=int, default=0, help="the server's (0: a free one)")
        parser.add_argument(
            "--chromium", default=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
        )
        parser.add_argument("--report", type=Path, default=settings.VAR_DIR / "bench")

    def handle(self, *args: object, **options: object) -> None:
        photos_dir, limit = Path(str(options["photos"])), int(str(options["limit"]))
        model_name = str(options["model"])
        version = model_version_production(name=model_name)
        if version is None:
            raise CommandError(f"{model_name!r} has no production version.")
        if not photos_dir.is_dir():
            raise CommandError(f"{photos_dir} is not a folder.")
        index_of = {
            wnid: version.labels[i] for i, wnid in enumerate(_wordnet_ids(len(version.labels)))
        }
        found = folder_photos(photos_dir, label_of_wordnet_id=index_of.get)
        if not found:
            raise CommandError(f"{photos_dir} holds no photos.")
        chosen = found[:: max(1, len(found) // limit)][:limit]
        self.stdout.write(f"{len(chosen)} of {len(found)} photos, model {model_name}")
        # The page's script as this checkout has it ('make run' collects it likewise).
        call_command("collectstatic", interactive=False, verbosity=0)
        with self._server(int(str(options["port"]))) as base:
            rows = self._run(chosen, base=base, model=model_name, chromium=str(options["chromium"]))
        figures = summary(rows)
        self.stdout.write(json.dumps(figures))
        report = Path(str(options["report"]))
        report.mkdir(parents=True, exist_ok=True)
        path = report / "browser_resize.json"
        results = {
            "photos": f"{photos_dir.name}, upscaled to ~{MEGAPIXELS:g} MP (LANCZOS, JPEG q"
            f"{JPEG_QUALITY})",
            "model": f"{version.name} v{version.version}",
            "summary": figures,
            "rows": rows,
        }
        path.write_text(json.dumps(results, indent=2) + "\n")
        self.stdout.write(f"Written to {path}")

    def _run(self, photos: list[Photo], *, base: str, model: str, chromium: str) -> list[dict]:
        from playwright.sync_api import sync_playwright

        rows = []
        with (
            tempfile.TemporaryDirectory(prefix="browser-resize-") as folder,
            sync_playwright() as p,
        ):
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.add_init_script(_RECORD_SENT)
            page.goto(f"{base}/")
            if page.locator("#model-choice").count():
                page.locator("#model-choice").select_option(model)
            for number, photo in enumerate(photos, 1):
                target = Path(folder) / "camera.jpg"
                size = camera_size(photo.path, target)
                original = target.read_bytes()
                server = self._post(f"{base}/classify-image", original, model=model)
                with page.expect_response(
                    lambda r: r.url.endswith("/classify-image") and r.request.method == "POST"
                ) as answer:
                    page.locator("#image-file").set_input_files(target)
                browsed = answer.value.json()
                sent = page.evaluate("window.__sentBytes")
                target.unlink()
                rows.append(
                    {
                        "photo": photo.name,
                        "size": f"{size[0]}x{size[1]}",
                        "label": photo.label,
                        "server": server["classification"],
                        "server_confidence": round(server["confidence"], 4),
                        "browser": browsed["classification"],
                        "browser_confidence": round(browsed["confidence"], 4),
                        "agree": server["classification"] == browsed["classification"],
                        "original_bytes": len(original),
                        "sent_bytes": sent,
                        "resized": browsed["image_sha256"] != server["image_sha256"],
                    }
                )
                if number % 25 == 0:
                    self.stdout.write(f"  {number} photos: {json.dumps(summary(rows))}")
            browser.close()
        return rows

    @staticmethod
    def _post(url: str, data: bytes, *, model: str) -> dict:
        body, content_type = _multipart(data, model=model)
        request = urllib.request.Request(  # noqa: S310 (loopback)
            url, data=body, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return json.load(response)

    @contextlib.contextmanager
    def _server(self, port: int) -> Iterator[str]:
        """gunicorn as 'make run' starts it, on a loopback port."""
        if not port:
            with contextlib.closing(socket.socket()) as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        environment = {
            **os.environ,
            "PORT": str(port),
            "LOG_LEVEL": "WARNING",
            "THROTTLE_ANON_RATE": "1000000/minute",  # one client sends every request
        }
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
        try:
            deadline = time.monotonic() + 60
            while True:
                if server.poll() is not None:
                    raise CommandError("gunicorn exited; run 'make run' once to see why.")
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                if time.monotonic() > deadline:
                    raise CommandError("gunicorn did not start within 60 s.")
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(timeout=20)


def _wordnet_ids(classes: int) -> list[str]:
    """The ImageNet classes' WordNet ids, for a 1000-class model (none for another)."""
    return imagenet_wordnet_ids() if classes == NUM_CLASSES else []
