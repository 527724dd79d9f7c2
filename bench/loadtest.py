"""python -m bench loadtest: the service under load from a real load tool, beside a naive peer.

A benchmark, not a test ('make loadtest' runs it). It starts the service as 'make run' does
(classifier_site.serve, its workers and threads) under each HTTP server (granian, the default,
and gunicorn's threaded workers, with the same workers, threads and settings), once with local
memory and SQLite and once with Redis and PostgreSQL, drives it with wrk (Debian's package;
the scenarios are load.lua's) at several concurrencies for a fixed time per run, and records
for each scenario requests/s, p50/p95/p99 latency, errors, the server's CPU milliseconds per
request (its processes' user + system time over the run's steady window, from /proc, divided by
the 200s answered in it) and each worker's RSS.
The same uncached uploads go to a naive peer (naive_peer.py: Flask and Keras model.predict, as
tutorials serve it) so every figure is also a ratio. Then the upload photos (photos.py: the small
bench JPEG and camera-size ones, 12 and 24 megapixel JPEGs and a 12 megapixel PNG) go, side by
side at 16 clients, to the service (the first variant and server named) and to each peer: the
naive one, FastAPI + uvicorn (fastapi_peer.py) and LitServe (litserve_peer.py), the two last
serving the very LiteRT file the service serves with its version's preprocessing, with as many
worker processes and LiteRT threads; each run also records every server process's peak RSS.
Beside the plain uncached uploads of the first server on the local variant, the same uploads
with a staging copy of the default model shadowed on 10 % and 100 % of them (--shadow): what
shadow evaluation costs the answers, and the shadow rows written and dropped.
Figures go to var/bench/load.json, their tables to var/bench/load.md and plots to
docs/performance/.
"""

import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from bench.loopback import free_port, serve_files
from bench.photos import PHOTOS, Photo, photo_make
from classification import selectors
from classification.models import ModelVersion
from classification.registry.services import model_version_create
from classification.serving.engine import get_runtime
from classification.serving.imaging import image_decode, image_preprocess
from classification.store import artifact_path
from ground_truth.models import ShadowPrediction

BENCH = Path(__file__).resolve().parent  # load.lua beside this file
DEFAULT_SCENARIOS = ["health_live", "upload", "url_miss", "url_hit", "content_hit", "mix"]
# The camera-size uploads (photos.py), also allowed in --scenarios.
SCENARIOS = [*DEFAULT_SCENARIOS, "upload_12mp", "upload_24mp", "upload_png_camera"]
PEERS = {
    "naive": "naive (Flask + Keras)",
    "fastapi": "FastAPI + uvicorn",
    "litserve": "LitServe",
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
UNTHROTTLED = "100000000/minute"


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the server's master and workers)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                queue.extend(int(child) for child in children)
    return found


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
    return total


def _minor_faults(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])
    return total


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _peak_rss_reset(pids: list[int]) -> None:
    """Start each process's peak RSS (VmHWM) afresh: Linux resets it on "5" to clear_refs."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def _peak_rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


@dataclass
class Server:
    url: str
    process: subprocess.Popen

    def workers(self) -> list[int]:
        return [pid for pid in _process_tree(self.process.pid) if pid != self.process.pid]

    def pids(self) -> list[int]:
        return _process_tree(self.process.pid)


def _wait_http(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CommandError(f"The server for {url} exited with {process.returncode}.")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):  # noqa: S310
            return
        time.sleep(0.2)
    raise CommandError(f"{url} did not answer within {timeout:.0f} s.")


def _wait_idle(server: Server, timeout: float = 60) -> None:
    """Until the server has finished the requests wrk left unanswered (its CPU is quiet)."""
    deadline = time.monotonic() + timeout
    before = _cpu_seconds(server.pids())
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _cpu_seconds(server.pids())
        if now - before < 0.05:  # under a tenth of one core
            return
        before = now


def service_workers() -> int:
    """The service's worker processes in the load test (serve.py's WEB_CONCURRENCY, default 2)."""
    return int(os.environ.get("WEB_CONCURRENCY") or 2)


def peer_config_write(version: ModelVersion, path: Path) -> Path:
    """The facts of ``version`` the framework peers serve (peer_model.py reads them)."""
    config = {
        "model": str(artifact_path(version.artifact)),  # the very file the service serves
        "labels": version.labels,
        "input_size": version.input_size,
        "preprocessing": version.preprocessing,
        "outputs": version.metrics.get("outputs", "probabilities"),
        # As the service's workers compute it (the same environment): CPUs / workers.
        "threads": settings.LITERT_NUM_THREADS,
    }
    path.write_text(json.dumps(config))
    return path


@contextlib.contextmanager
def peer_serve(
    name: str, *, version: ModelVersion, workdir: Path, workers: int
) -> Iterator[Server]:
    """Start the peer ``name`` (naive, fastapi or litserve) for ``version`` on a free port.

    Each runs in its own session, stopped as a whole: LitServe's inference workers and API
    servers outlive its main process when only that one is told to stop.
    """
    port = free_port()
    config = peer_config_write(version, workdir / "peer.json")
    environment = {**os.environ, "PEER_CONFIG": str(config)}
    if name == "naive":
        labels = workdir / "labels.json"
        labels.write_text(json.dumps(version.labels))
        keras_file = workdir / "model.keras"
        shutil.copy(artifact_path(version.source_artifact), keras_file)
        low, high = version.preprocessing.get("scale", [-1.0, 1.0])
        arguments = [
            "bench.naive_peer",
            *(str(a) for a in (keras_file, labels, port, version.input_size, low, high)),
        ]
    elif name == "fastapi":
        arguments = [
            "uvicorn",
            "bench.fastapi_peer:app",
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
            *("--no-access-log", "--log-level", "warning"),
        ]
    elif name == "litserve":
        arguments = ["bench.litserve_peer", str(port), str(workers)]
    else:
        raise CommandError(f"Unknown peer {name!r} (of {', '.join(PEERS)}).")
    process = subprocess.Popen(  # noqa: S603 - our own peer scripts, fixed arguments
        [sys.executable, "-m", *arguments],
        cwd=settings.BASE_DIR,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = Server(url=f"http://127.0.0.1:{port}", process=process)
    try:
        _wait_http(f"{server.url}/health", process)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            time.sleep(1)  # its children's own shutdown
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def _names(option: object, known: list[str] | dict, what: str) -> list[str]:
    names = [name for name in str(option).split(",") if name]
    if unknown := set(names) - set(known):
        raise CommandError(f"Unknown {what} {sorted(unknown)} (of {', '.join(known)}).")
    return names


class Command(BaseCommand):
    help = (
        "Load-test the service with wrk beside a naive peer, then small and camera-size uploads"
        " side by side with FastAPI and LitServe peers; write load.json, load.md and plots."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seconds", type=float, default=10.0, help="per run")
        parser.add_argument("--concurrency", default="1,4,16,64")
        parser.add_argument("--soak-seconds", type=float, default=0.0)
        parser.add_argument("--variants", default="local,redis-postgres")
        parser.add_argument("--servers", default="granian,gunicorn", help="WEB_SERVER values")
        parser.add_argument(
            "--scenarios",
            default=",".join(DEFAULT_SCENARIOS),
            help=f"of {', '.join(SCENARIOS)}; empty: none",
        )
        parser.add_argument(
            "--peers",
            default=",".join(PEERS),
            help="the peers beside the service; the naive one also runs 'upload' at every"
            " --concurrency; empty: none",
        )
        parser.add_argument("--no-peer", action="store_true", help="the same as --peers ''")
        parser.add_argument(
            "--photos",
            default=",".join(PHOTOS),
            help="uploads sent side by side to the service (the first variant and server) and"
            " each peer; empty: none",
        )
        parser.add_argument(
            "--photo-concurrency", default="16", help="clients of the side-by-side runs"
        )
        parser.add_argument(
            "--photo-seconds",
            type=float,
            default=20.0,
            help="per side-by-side run (camera-size uploads answer a few per second)",
        )
        parser.add_argument(
            "--shadow",
            default="0.1,1",
            help="shares of the uploads a staging copy of the default model is shadowed on,"
            " beside the plain uploads (first server, local variant); empty: none",
        )
        parser.add_argument("--shadow-concurrency", default="16", help="clients of the shadow runs")
        parser.add_argument("--report", type=Path, default=settings.VAR_DIR / "bench")
        parser.add_argument(
            "--plots", type=Path, default=settings.BASE_DIR / "docs" / "performance"
        )

    def handle(self, *args: object, **options: object) -> None:
        if shutil.which("wrk") is None:
            raise CommandError("wrk is not installed: 'apt-get install -y wrk' (Debian).")
        self.seconds = float(options["seconds"])  # type: ignore[arg-type]
        self.photo_seconds = float(options["photo_seconds"])  # type: ignore[arg-type]
        self.scenarios = _names(options["scenarios"], SCENARIOS, "scenarios")
        peers = [] if options["no_peer"] else _names(options["peers"], PEERS, "peers")
        photo_names = _names(options["photos"], PHOTOS, "photos")
        concurrencies = [int(c) for c in str(options["concurrency"]).split(",")]
        shadow_shares = [float(share) for share in str(options["shadow"]).split(",") if share]
        shadow_concurrencies = [int(c) for c in str(options["shadow_concurrency"]).split(",")]
        photo_concurrencies = [int(c) for c in str(options["photo_concurrency"]).split(",")]
        workdir = Path(tempfile.mkdtemp(prefix="loadtest-"))
        # Every upload scenario's photo (the small one also for content hits, URLs and the mix).
        wanted = {"small"} | set(photo_names)
        wanted |= {name for name, (scenario, *_) in PHOTOS.items() if scenario in self.scenarios}
        self.photos: dict[str, Photo] = {}
        self.photo_files: dict[str, Path] = {}
        for name in PHOTOS:
            if name in wanted:
                photo = self.photos[name] = photo_make(name)
                path = self.photo_files[photo.scenario] = workdir / f"{name}.upload"
                path.write_bytes(photo.data)
        self.measured: dict[tuple[str, str, int, int], dict] = {}
        results: dict[str, object] = {
            "machine": f"{os.cpu_count()} cores",
            "seconds_per_run": self.seconds,
            "concurrency": concurrencies,
            "photo_concurrency": photo_concurrencies,
            "photo_seconds_per_run": self.photo_seconds,
            "variants": {},
            "photos": {
                name: {
                    "bytes": len(self.photos[name].data),
                    "size": list(self.photos[name].size),
                    "content_type": self.photos[name].content_type,
                    "servers": {},
                }
                for name in photo_names
            },
        }
        jpeg = self.photos["small"].data
        # URL misses need new bytes per URL, or they would be content hits.
        with serve_files(
            {"/same.jpg": jpeg},
            content_type="image/jpeg",
            fallback=lambda path: jpeg + path.encode(),
        ) as images:
            servers = str(options["servers"]).split(",")
            variants = str(options["variants"]).split(",")
            for variant in variants:
                for web_server in servers:
                    name = f"{variant}, {web_server}"
                    self.stdout.write(f"== {name}")
                    env = {**self._variant_env(variant), "WEB_SERVER": web_server}
                    with self._service(env) as server:
                        results["variants"][name] = self._variant(  # type: ignore[index]
                            server,
                            image_base=images.url,
                            concurrencies=concurrencies,
                            # The soak runs as deployed: Redis holds the cache, not the worker,
                            # under the server 'make run' starts (the first one named).
                            soak_seconds=float(options["soak_seconds"])  # type: ignore[arg-type]
                            if variant == "redis-postgres" and web_server == servers[0]
                            else 0.0,
                        )
                        if (variant, web_server) == (variants[0], servers[0]):
                            self._photos(results, f"ours ({name})", server, photo_concurrencies)
                        # The local variant's database is this command's: it can stage the copy.
                        if variant == "local" and web_server == servers[0] and shadow_shares:
                            results["shadow"] = {
                                "server": name,
                                "runs": self._shadow(
                                    server, shares=shadow_shares, concurrencies=shadow_concurrencies
                                ),
                            }
                    if (variant, web_server) == (variants[0], servers[0]) and photo_names:
                        # The same service with the float model answering by default: what
                        # the int8 default is worth, in the same run.
                        self.stdout.write(f"== {name}, float default (DEFAULT_MODEL_INT8=0)")
                        with self._service({**env, "DEFAULT_MODEL_INT8": "0"}) as server:
                            self._photos(
                                results, f"ours, float ({name})", server, photo_concurrencies
                            )
            # The peers serve the very file that answers our requests by default (the int8
            # version where it passes the default rule, as after 'make run').
            default = selectors.model_default_name() or settings.DEFAULT_MODEL
            version = selectors.model_version_production(name=default)
            for peer in peers:
                if version is None:
                    raise CommandError(f"{default} is not in production in this database.")
                self.stdout.write(f"== peer: {PEERS[peer]}")
                folder = workdir / peer
                folder.mkdir()
                with peer_serve(
                    peer, version=version, workdir=folder, workers=service_workers()
                ) as server:
                    if peer == "naive":
                        results["peer"] = {
                            "upload": {
                                str(c): self._run(server, "upload", c, image_base="")
                                for c in concurrencies
                            }
                        }
                    self._photos(results, PEERS[peer], server, photo_concurrencies)
        report = Path(options["report"])  # type: ignore[arg-type]
        report.mkdir(parents=True, exist_ok=True)
        (report / "load.json").write_text(json.dumps(results, indent=2) + "\n")
        self._plots(results, Path(options["plots"]))  # type: ignore[arg-type]
        tables = self._tables(results)
        (report / "load.md").write_text(tables)
        self.stdout.write(tables)
        shutil.rmtree(workdir, ignore_errors=True)

    def _photos(self, results: dict, label: str, server: Server, concurrencies: list[int]) -> None:
        """Each side-by-side photo's uploads to ``server``, recorded under ``label``."""
        for name, photo in results["photos"].items():
            scenario = self.photos[name].scenario
            photo["servers"][label] = {
                str(c): self._run(server, scenario, c, image_base="", seconds=self.photo_seconds)
                for c in concurrencies
            }

    # --- the service ------------------------------------------------------------------------

    @staticmethod
    def _variant_env(variant: str) -> dict[str, str]:
        if variant == "local":
            return {"REDIS_URL": "", "DATABASE_URL": os.environ.get("DATABASE_URL", "")}
        if variant == "redis-postgres":
            return {
                "REDIS_URL": os.environ.get("LOADTEST_REDIS_URL", "redis://127.0.0.1:6379/2"),
                "DATABASE_URL": os.environ.get(
                    "LOADTEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
                ),
                "CACHE_KEY_PREFIX": f"loadtest-{os.getpid()}",
            }
        raise CommandError(f"Unknown variant {variant!r} (local, redis-postgres).")

    @contextlib.contextmanager
    def _service(self, env: dict[str, str]) -> Iterator[Server]:
        environment = {
            **os.environ,
            # The access line per request is part of the cost, as in production.
            "LOG_LEVEL": os.environ.get("LOADTEST_LOG_LEVEL", "INFO"),
            "THROTTLE_ANON_RATE": UNTHROTTLED,
            "THROTTLE_USER_RATE": UNTHROTTLED,
            "IMAGE_FETCH_PRIVATE_ALLOWLIST": "127.0.0.0/8",
            # wrk's connections all come from 127.0.0.1: with the default bound of four fetches
            # per client address, URL misses would measure that bound (503 busy), not capacity.
            "IMAGE_FETCH_PER_CLIENT": os.environ.get("LOADTEST_FETCH_PER_CLIENT", "64"),
            "IMAGE_FETCH_CONCURRENCY": os.environ.get("LOADTEST_FETCH_CONCURRENCY", ""),
            **env,
        }
        environment = {key: value for key, value in environment.items() if value != ""}
        manage = [sys.executable, "manage.py"]
        for step in (
            ["migrate", "--noinput", "-v0"],
            ["fetch_model", "dog-breeds", "--if-missing"],
            ["fetch_model", "imagenet-lite0", "--if-missing"],
            ["quantize_model", "imagenet-lite0", "--if-missing"],
        ):
            subprocess.run([*manage, *step], cwd=settings.BASE_DIR, env=environment, check=True)  # noqa: S603
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "classifier_site.serve"],
            cwd=settings.BASE_DIR,
            env={**environment, "PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_http(f"{url}/health/ready", process)
            yield Server(url=url, process=process)
        finally:
            process.terminate()
            process.wait(timeout=30)

    def _variant(
        self,
        server: Server,
        *,
        image_base: str,
        concurrencies: list[int],
        soak_seconds: float,
    ) -> dict:
        figures: dict[str, object] = {
            "rss_mb_start": [_rss_mb(p) for p in server.workers()],
            # Measured beside the runs it is compared with: a shared machine's speed drifts.
            "model_only": self._model_only(self.photos["small"].data),
        }
        for scenario in self.scenarios:
            figures[scenario] = {
                str(c): self._run(server, scenario, c, image_base=image_base) for c in concurrencies
            }
        figures["rss_mb_after_runs"] = [_rss_mb(p) for p in server.workers()]
        if soak_seconds:
            before = [_rss_mb(p) for p in server.workers()]
            soak = self._run(server, "mix", 16, image_base=image_base, seconds=soak_seconds)
            figures["soak"] = {
                **soak,
                "rss_mb_before": before,
                "rss_mb_after": [_rss_mb(p) for p in server.workers()],
            }
        return figures

    def _shadow(self, server: Server, *, shares: list[float], concurrencies: list[int]) -> dict:
        """Uncached uploads without shadowing, then with a staging copy of the default model
        shadowed on each of ``shares`` of them; the copy is deleted afterwards."""
        default = selectors.model_default_name() or settings.DEFAULT_MODEL
        production = selectors.model_version_production(name=default)
        if production is None:
            raise CommandError(f"{default} is not in production in this database.")
        skipped = {"id", "name", "version", "stage", "created_at", "promoted_at", "shadow_share"}
        copy = model_version_create(
            name=production.name,
            **{
                field.attname: getattr(production, field.attname)
                for field in ModelVersion._meta.concrete_fields
                if field.attname not in skipped and field.attname != "reference_profile"
            },
        )
        runs: dict[str, dict] = {}
        try:
            for clients in concurrencies:
                runs[f"0, {clients}"] = self._shadow_run(server, copy, 0.0, clients)
                for share in shares:
                    runs[f"{share:g}, {clients}"] = self._shadow_run(server, copy, share, clients)
        finally:
            copy.delete()  # and its shadow rows
        return runs

    def _shadow_run(self, server: Server, copy: ModelVersion, share: float, clients: int) -> dict:
        copy.shadow_share = share
        copy.save(update_fields=["shadow_share"])
        # Every worker's shadow thread reads the registry at most every MODEL_REFRESH_SECONDS.
        time.sleep(settings.MODEL_REFRESH_SECONDS + 1.5)
        rows_before = ShadowPrediction.objects.filter(shadow_version=copy).count()
        dropped_before = self._counter(server, "classifier_shadow_dropped_total", copy)
        figures = dict(self._run(server, "upload", clients, image_base="", tag=f"shadow {share:g}"))
        # _run waited for the server to be idle: the shadow threads have answered their queues.
        figures["shadow_share"] = share
        figures["shadow_rows_written"] = (
            ShadowPrediction.objects.filter(shadow_version=copy).count() - rows_before
        )
        figures["shadow_dropped"] = int(
            self._counter(server, "classifier_shadow_dropped_total", copy) - dropped_before
        )
        self.stdout.write(
            f"  shadow {share:4.0%}: {figures['shadow_rows_written']} rows written, "
            f"{figures['shadow_dropped']} dropped, of {figures['requests']} answers"
        )
        return figures

    @staticmethod
    def _counter(server: Server, name: str, version: ModelVersion) -> float:
        """The sum of ``name``'s series for ``version`` on the server's /metrics."""
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
        wanted = (f'model="{version.name}"', f'version="{version.version}"')
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") and all(label in line for label in wanted)
        )

    def _run(
        self,
        server: Server,
        scenario: str,
        clients: int,
        *,
        image_base: str,
        seconds: float | None = None,
        tag: str = "",
    ) -> dict:
        duration = round(seconds or self.seconds)
        # A run already made against this server (the side-by-side small upload at 16 clients,
        # say) is not made again; ``tag`` names a run of the same scenario under other settings.
        key = (server.url, f"{scenario} {tag}".strip(), clients, duration)
        if key in self.measured:
            return self.measured[key]
        path = "/health/live" if scenario == "health_live" else "/"
        if scenario == "url_hit":  # the entry exists before the timed run
            with contextlib.suppress(OSError):
                body = json.dumps({"image_url": f"{image_base}/same.jpg"}).encode()
                request = urllib.request.Request(  # noqa: S310 (loopback)
                    f"{server.url}/classify-image",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                urllib.request.urlopen(request, timeout=30).read()  # noqa: S310 (loopback)
        decodes_before = self._decodes(server)
        _peak_rss_reset(server.pids())
        cpu_before = _cpu_seconds(server.pids())
        faults_before = _minor_faults(server.pids())
        command = [
            "wrk",
            "-t",
            str(min(clients, 2)),
            "-c",
            str(clients),
            "-d",
            f"{duration}s",
            "--timeout",
            "30s",  # camera-size uploads at 16 clients can queue for seconds
            "-s",
            str(BENCH / "load.lua"),
            server.url + path,
        ]
        photo = next(
            (p for p in self.photos.values() if p.scenario == scenario), self.photos["small"]
        )
        # The steady window: whole seconds from the second after the start to the end.
        started = time.time()
        window = (math.ceil(started) + 1, math.floor(started + duration))
        env = {
            **os.environ,
            "SCENARIO": "get" if scenario == "health_live" else scenario,
            "IMAGE": str(self.photo_files[photo.scenario]),
            "IMAGE_TYPE": photo.content_type,
            "IMAGE_BASE": image_base,
            "WINDOW_START": str(window[0]),
            "WINDOW_END": str(window[1]),
        }
        process = subprocess.Popen(  # noqa: S603 - wrk, fixed arguments
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        window_cpu = None
        if window[1] > window[0]:
            time.sleep(max(0.0, window[0] - time.time()))
            window_cpu_start = _cpu_seconds(server.pids())
            time.sleep(max(0.0, window[1] - time.time()))
            window_cpu = _cpu_seconds(server.pids()) - window_cpu_start
        output, errors = process.communicate()
        if process.returncode:
            raise CommandError(f"wrk failed ({process.returncode}): {errors.strip()}")
        pids = server.pids()
        cpu_after = _cpu_seconds(pids)
        faults_after = _minor_faults(pids)
        # Each process's own peak over the run (the master first); their sum bounds the
        # peak of the whole server from above.
        peaks = [_peak_rss_mb(pid) for pid in pids]
        line = next(line for line in output.splitlines() if line.startswith("{"))
        figures = json.loads(line)
        requests = max(figures["requests"], 1)
        figures["rps_whole_run"] = round(figures["requests"] / figures["duration_s"], 1)
        figures["server_cpu_ms_per_request_whole_run"] = round(
            (cpu_after - cpu_before) * 1000 / requests, 3
        )
        # The steady window's figures when it saw answers (200s: a 503 busy costs little): over
        # the whole run, the ramp-up and the requests unanswered at the end (whose CPU is
        # spent) weigh on slow scenarios.
        in_window = figures["window_requests"]
        if window_cpu is not None and in_window:
            figures["rps"] = round(in_window / (window[1] - window[0]), 1)
            figures["server_cpu_ms_per_request"] = round(window_cpu * 1000 / in_window, 3)
        else:
            figures["rps"] = figures["rps_whole_run"]
            figures["server_cpu_ms_per_request"] = figures["server_cpu_ms_per_request_whole_run"]
        figures["server_minor_faults_per_request"] = round(
            (faults_after - faults_before) / requests, 1
        )
        figures["peak_rss_mb_per_process"] = peaks
        figures["peak_rss_mb_largest_worker"] = max(peaks[1:] or peaks)
        figures["peak_rss_mb_total"] = round(sum(peaks), 1)
        decodes = self._decodes(server)
        if decodes is not None and decodes_before is not None:
            figures["decodes"] = int(decodes - decodes_before)
        self.stdout.write(
            f"{key[1]:17s} c={clients:<3d} {figures['rps']:8.1f} req/s"
            f"  p50 {figures['p50_ms']:7.2f}  p99 {figures['p99_ms']:7.2f} ms"
            f"  cpu {figures['server_cpu_ms_per_request']:6.2f} ms/req"
            f"  peak RSS {figures['peak_rss_mb_largest_worker']:.0f} / "
            f"{figures['peak_rss_mb_total']:.0f} MB  errors {figures['errors']}"
        )
        self.measured[key] = figures
        _wait_idle(server)
        return figures

    @staticmethod
    def _decodes(server: Server) -> float | None:
        """How many images the service decoded so far (its stage histogram's count)."""
        try:
            with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:  # noqa: S310
                text = response.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith('classifier_stage_duration_seconds_count{stage="decode"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    # --- the ceiling, and the plots ------------------------------------------------------------

    @staticmethod
    def _model_only(jpeg: bytes) -> dict:
        """decode + preprocess + invoke of the default model, in this process: the ceiling."""
        model = get_runtime().serving_model()
        samples = []
        for _ in range(100):
            started = time.process_time()
            decoded = image_decode(data=jpeg, max_pixels=settings.IMAGE_MAX_PIXELS)
            batch = image_preprocess(
                image=decoded.image, input_size=model.input_size, preprocessing=model.preprocessing
            )
            model.probabilities(batch)
            samples.append(time.process_time() - started)
        cpu_ms = statistics.median(samples) * 1000
        return {
            "model": model.name,
            "cpu_ms_per_image": round(cpu_ms, 3),
            "ceiling_rps (2000 / cpu_ms)": round(2000 / cpu_ms, 1),
        }

    def _tables(self, results: dict) -> str:
        """The figures as the Markdown tables of docs/performance.md, and the goals' ratios."""
        concurrencies = results["concurrency"]
        header = "| scenario | " + " | ".join(str(c) for c in concurrencies) + " |"
        rule = "|---" * (len(concurrencies) + 1) + "|"
        lines = ["Cells: requests/s / p50 ms / p99 ms / server CPU ms per request / non-200s.", ""]
        for variant, figures in results["variants"].items():
            lines += [f"### {variant}", "", header, rule]
            for scenario in self.scenarios:
                cells = [
                    "{rps:.0f} / {p50_ms:.1f} / {p99_ms:.0f} / {server_cpu_ms_per_request:.1f}"
                    " / {errors}".format(**figures[scenario][str(c)])
                    for c in concurrencies
                ]
                lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
            lines.append("")
        if "peer" in results:
            lines += ["### naive peer: upload", "", header, rule]
            cells = [
                "{rps:.1f} / {p50_ms:.0f} / {p99_ms:.0f} / {server_cpu_ms_per_request:.0f}"
                " / {errors}".format(**results["peer"]["upload"][str(c)])
                for c in concurrencies
            ]
            lines += ["| upload | " + " | ".join(cells) + " |", ""]
        lines += self._photo_table(results)
        lines += self._shadow_table(results)
        for variant, figures in results["variants"].items():
            model = figures["model_only"]
            model_ms = model["cpu_ms_per_image"]
            lines.append(
                f"- {variant}: model only ({model['model']}, beside the runs) {model_ms} ms CPU"
                f" per image, ceiling {2000 / model_ms:.0f} requests/s"
            )
            if "upload" in figures:
                cpu = [
                    figures["upload"][str(c)]["server_cpu_ms_per_request"] for c in concurrencies
                ]
                lines.append(
                    "  uncached CPU / model: "
                    + ", ".join(
                        f"{c}: {ms / model_ms:.2f}x"
                        for c, ms in zip(concurrencies, cpu, strict=True)
                    )
                )
                if "16" in figures["upload"]:
                    rps = figures["upload"]["16"]["rps"]
                    lines.append(f"  uncached req/s at 16 / ceiling: {rps / (2000 / model_ms):.0%}")
            if "url_hit" in figures and "health_live" in figures and "16" in figures["url_hit"]:
                hit, live = figures["url_hit"]["16"], figures["health_live"]["16"]
                cpu_ratio = hit["server_cpu_ms_per_request"] / live["server_cpu_ms_per_request"]
                lines.append(
                    f"  URL hit / health_live at 16: req/s {hit['rps'] / live['rps']:.2f}x, "
                    f"server CPU per request {cpu_ratio:.2f}x; "
                    f"hit p99 / p50 at 16: {hit['p99_ms'] / hit['p50_ms']:.1f}x"
                )
            if "soak" in figures:
                soak = figures["soak"]
                growth = [
                    f"{before} -> {after} MB ({after / before - 1:+.1%})"
                    for before, after in zip(
                        soak["rss_mb_before"], soak["rss_mb_after"], strict=True
                    )
                ]
                lines.append("  soak RSS per worker: " + ", ".join(growth))
        return "\n".join(lines) + "\n"

    @staticmethod
    def _shadow_table(results: dict) -> list[str]:
        """Uncached uploads with a staging copy of the default model shadowed on a share."""
        if "shadow" not in results:
            return []
        lines = [
            f"### Shadow evaluation ({results['shadow']['server']}): uncached uploads",
            "",
            "| shadow share | clients | req/s | p50 ms | p99 ms | server CPU ms/req"
            " | answers | shadow rows written | shadow dropped | non-200s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key, run in results["shadow"]["runs"].items():
            share, clients = key.split(", ")
            lines.append(
                f"| {float(share):.0%} | {clients} | {run['rps']:.1f} | {run['p50_ms']:.1f}"
                f" | {run['p99_ms']:.1f} | {run['server_cpu_ms_per_request']:.1f}"
                f" | {run['requests']} | {run['shadow_rows_written']}"
                f" | {run['shadow_dropped']} | {run['errors']} |"
            )
        return [*lines, ""]

    @staticmethod
    def _photo_table(results: dict) -> list[str]:
        """The side-by-side uploads: one row per photo, server and number of clients."""
        if not any(photo["servers"] for photo in results["photos"].values()):
            return []
        lines = [
            "### Uploads side by side",
            "",
            "Peak RSS: the largest worker process's and the sum of every process's peak (MB).",
            "",
            "| photo | server | clients | req/s | p50 ms | p99 ms | server CPU ms/req"
            " | peak RSS, largest worker | peak RSS, all processes | non-200s + timeouts |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, photo in results["photos"].items():
            width, height = photo["size"]
            what = f"{name} ({width}x{height} {photo['content_type'][6:].upper()},"
            what += f" {photo['bytes'] / 1e6:.2f} MB)"
            for server, runs in photo["servers"].items():
                for clients, run in runs.items():
                    lines.append(
                        f"| {what} | {server} | {clients} | {run['rps']:.1f} | {run['p50_ms']:.0f}"
                        f" | {run['p99_ms']:.0f} | {run['server_cpu_ms_per_request']:.1f}"
                        f" | {run['peak_rss_mb_largest_worker']:.0f}"
                        f" | {run['peak_rss_mb_total']:.0f} | {run['errors']} |"
                    )
        return [*lines, ""]

    def _photo_plot(self, results: dict, folder: Path) -> None:
        """photos.png: requests/s, p99, server CPU per request and peak RSS, photo by photo."""
        import matplotlib.pyplot as plt

        photos = [name for name, photo in results["photos"].items() if photo["servers"]]
        if not photos:
            return
        servers = list(results["photos"][photos[0]]["servers"])
        clients = str(results["photo_concurrency"][0])
        figure, axes = plt.subplots(1, 4, figsize=(21, 4.2), squeeze=False)
        width = 0.8 / len(servers)
        for axis, (metric, label) in zip(
            axes[0],
            (
                ("rps", "requests/s"),
                ("p99_ms", "p99 latency (ms)"),
                ("server_cpu_ms_per_request", "server CPU ms per request"),
                ("peak_rss_mb_total", "peak RSS, all processes (MB)"),
            ),
            strict=True,
        ):
            for index, server in enumerate(servers):
                axis.bar(
                    [i + index * width for i in range(len(photos))],
                    [results["photos"][p]["servers"][server][clients][metric] for p in photos],
                    width,
                    label=server,
                )
            axis.set_xticks([i + 0.4 - width / 2 for i in range(len(photos))], photos)
            axis.set_yscale("log")
            axis.set_xlabel(f"upload photo, {clients} concurrent clients")
            axis.set_ylabel(label)
            axis.grid(True, which="both", axis="y", alpha=0.3)
        axes[0][0].legend(fontsize=8, loc="best")
        figure.tight_layout()
        figure.savefig(folder / "photos.png", dpi=110)
        plt.close(figure)

    def _plots(self, results: dict, folder: Path) -> None:
        import matplotlib  # here: only the plots need it, and its backend is chosen first

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        folder.mkdir(parents=True, exist_ok=True)
        concurrencies = results["concurrency"]
        for metric, label, name in (
            ("rps", "requests/s", "throughput"),
            ("p99_ms", "p99 latency (ms)", "p99"),
        ):
            figure, axes = plt.subplots(
                1,
                len(results["variants"]),
                figsize=(6 * len(results["variants"]), 4.2),
                squeeze=False,
            )
            for axis, (variant, figures) in zip(axes[0], results["variants"].items(), strict=True):
                for scenario in self.scenarios:
                    axis.plot(
                        concurrencies,
                        [figures[scenario][str(c)][metric] for c in concurrencies],
                        marker="o",
                        label=scenario,
                    )
                if "peer" in results:
                    axis.plot(
                        concurrencies,
                        [results["peer"]["upload"][str(c)][metric] for c in concurrencies],
                        marker="x",
                        linestyle="--",
                        color="black",
                        label="naive peer: upload",
                    )
                axis.set_xscale("log", base=2)
                axis.set_yscale("log")
                axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
                axis.set_xlabel("concurrent clients")
                axis.set_ylabel(label)
                axis.set_title(variant)
                axis.grid(True, which="both", alpha=0.3)
            axes[0][-1].legend(fontsize=8, loc="best")
            figure.tight_layout()
            figure.savefig(folder / f"{name}.png", dpi=110)
            plt.close(figure)
        self._photo_plot(results, folder)
        self.stdout.write(f"Plots written to {folder}")
