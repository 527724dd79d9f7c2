"""python -m bench loadtest: the service under load from a real load tool, beside a naive peer.

A benchmark, not a test ('make loadtest' runs it). It starts the service as 'make run' does
(classifier_site.serve, its workers and threads) under each HTTP server (granian, the default,
and gunicorn's threaded workers, with the same workers, threads and settings), once with local
memory and SQLite and once with Redis and PostgreSQL, drives it with wrk (Debian's package;
the scenarios are load.lua's) at several concurrencies for a fixed time per run, and records
for each scenario requests/s, p50/p95/p99 latency, errors, the server's CPU milliseconds per
request (its processes' user + system time over the run, from /proc) and each worker's RSS.
The same uncached uploads go to a naive peer (naive_peer.py: Flask and Keras model.predict, as
tutorials serve it) so every figure is also a ratio. Figures go to var/bench/load.json, their
tables to var/bench/load.md and plots to docs/performance/.
"""

import contextlib
import json
import os
import shutil
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

from bench.classification import bench_jpeg
from bench.loopback import free_port, serve_files
from classification import selectors
from classification.serving.engine import get_runtime
from classification.serving.imaging import image_decode, image_preprocess
from classification.store import artifact_path

BENCH = Path(__file__).resolve().parent  # load.lua beside this file
SCENARIOS = ["health_live", "upload", "url_miss", "url_hit", "content_hit", "mix"]
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


class Command(BaseCommand):
    help = "Load-test the service with wrk beside a naive peer; write load.json and plots."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seconds", type=float, default=10.0, help="per run")
        parser.add_argument("--concurrency", default="1,4,16,64")
        parser.add_argument("--soak-seconds", type=float, default=0.0)
        parser.add_argument("--variants", default="local,redis-postgres")
        parser.add_argument("--servers", default="granian,gunicorn", help="WEB_SERVER values")
        parser.add_argument("--scenarios", default=",".join(SCENARIOS))
        parser.add_argument("--no-peer", action="store_true")
        parser.add_argument("--report", type=Path, default=settings.VAR_DIR / "bench")
        parser.add_argument(
            "--plots", type=Path, default=settings.BASE_DIR / "docs" / "performance"
        )

    def handle(self, *args: object, **options: object) -> None:
        if shutil.which("wrk") is None:
            raise CommandError("wrk is not installed: 'apt-get install -y wrk' (Debian).")
        self.seconds = float(options["seconds"])  # type: ignore[arg-type]
        self.scenarios = str(options["scenarios"]).split(",")
        if unknown := set(self.scenarios) - set(SCENARIOS):
            raise CommandError(f"Unknown scenarios {sorted(unknown)} (of {', '.join(SCENARIOS)}).")
        concurrencies = [int(c) for c in str(options["concurrency"]).split(",")]
        workdir = Path(tempfile.mkdtemp(prefix="loadtest-"))
        image = workdir / "photo.jpg"
        image.write_bytes(bench_jpeg(seed=1))
        results: dict[str, object] = {
            "machine": f"{os.cpu_count()} cores",
            "seconds_per_run": self.seconds,
            "concurrency": concurrencies,
            "variants": {},
        }
        jpeg = image.read_bytes()
        # URL misses need new bytes per URL, or they would be content hits.
        with serve_files(
            {"/same.jpg": jpeg},
            content_type="image/jpeg",
            fallback=lambda path: jpeg + path.encode(),
        ) as images:
            servers = str(options["servers"]).split(",")
            for variant in str(options["variants"]).split(","):
                for web_server in servers:
                    name = f"{variant}, {web_server}"
                    self.stdout.write(f"== {name}")
                    env = {**self._variant_env(variant), "WEB_SERVER": web_server}
                    with self._service(env) as server:
                        results["variants"][name] = self._variant(  # type: ignore[index]
                            server,
                            image=image,
                            image_base=images.url,
                            concurrencies=concurrencies,
                            # The soak runs as deployed: Redis holds the cache, not the worker,
                            # under the server 'make run' starts (the first one named).
                            soak_seconds=float(options["soak_seconds"])  # type: ignore[arg-type]
                            if variant == "redis-postgres" and web_server == servers[0]
                            else 0.0,
                        )
            if not options["no_peer"]:
                self.stdout.write("== naive peer (Flask + Keras model.predict)")
                with self._peer(workdir) as peer:
                    results["peer"] = {
                        "upload": {
                            str(c): self._run(peer, "upload", c, image=image, image_base="")
                            for c in concurrencies
                        }
                    }
        report = Path(options["report"])  # type: ignore[arg-type]
        report.mkdir(parents=True, exist_ok=True)
        (report / "load.json").write_text(json.dumps(results, indent=2) + "\n")
        self._plots(results, Path(options["plots"]))  # type: ignore[arg-type]
        tables = self._tables(results)
        (report / "load.md").write_text(tables)
        self.stdout.write(tables)
        shutil.rmtree(workdir, ignore_errors=True)

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
        image: Path,
        image_base: str,
        concurrencies: list[int],
        soak_seconds: float,
    ) -> dict:
        figures: dict[str, object] = {
            "rss_mb_start": [_rss_mb(p) for p in server.workers()],
            # Measured beside the runs it is compared with: a shared machine's speed drifts.
            "model_only": self._model_only(image.read_bytes()),
        }
        for scenario in self.scenarios:
            figures[scenario] = {
                str(c): self._run(server, scenario, c, image=image, image_base=image_base)
                for c in concurrencies
            }
        figures["rss_mb_after_runs"] = [_rss_mb(p) for p in server.workers()]
        if soak_seconds:
            before = [_rss_mb(p) for p in server.workers()]
            soak = self._run(
                server, "mix", 16, image=image, image_base=image_base, seconds=soak_seconds
            )
            figures["soak"] = {
                **soak,
                "rss_mb_before": before,
                "rss_mb_after": [_rss_mb(p) for p in server.workers()],
            }
        return figures

    def _run(
        self,
        server: Server,
        scenario: str,
        clients: int,
        *,
        image: Path,
        image_base: str,
        seconds: float | None = None,
    ) -> dict:
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
        cpu_before = _cpu_seconds(server.pids())
        faults_before = _minor_faults(server.pids())
        command = [
            "wrk",
            "-t",
            str(min(clients, 2)),
            "-c",
            str(clients),
            "-d",
            f"{round(seconds or self.seconds)}s",
            "--timeout",
            "10s",
            "-s",
            str(BENCH / "load.lua"),
            server.url + path,
        ]
        env = {
            **os.environ,
            "SCENARIO": "get" if scenario == "health_live" else scenario,
            "IMAGE": str(image),
            "IMAGE_BASE": image_base,
        }
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout  # noqa: S603
        cpu_after = _cpu_seconds(server.pids())
        faults_after = _minor_faults(server.pids())
        line = next(line for line in output.splitlines() if line.startswith("{"))
        figures = json.loads(line)
        requests = max(figures["requests"], 1)
        figures["rps"] = round(figures["requests"] / figures["duration_s"], 1)
        figures["server_cpu_ms_per_request"] = round((cpu_after - cpu_before) * 1000 / requests, 3)
        figures["server_minor_faults_per_request"] = round(
            (faults_after - faults_before) / requests, 1
        )
        decodes = self._decodes(server)
        if decodes is not None and decodes_before is not None:
            figures["decodes"] = int(decodes - decodes_before)
        self.stdout.write(
            f"{scenario:12s} c={clients:<3d} {figures['rps']:8.1f} req/s"
            f"  p50 {figures['p50_ms']:7.2f}  p99 {figures['p99_ms']:7.2f} ms"
            f"  cpu {figures['server_cpu_ms_per_request']:6.2f} ms/req  errors {figures['errors']}"
        )
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

    # --- the peer ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _peer(self, workdir: Path) -> Iterator[Server]:
        version = selectors.model_version_production(name="imagenet-lite0")
        if version is None:
            raise CommandError("imagenet-lite0 is not in production in this database.")
        labels = workdir / "labels.json"
        labels.write_text(json.dumps(version.labels))
        keras_file = workdir / "model.keras"
        shutil.copy(artifact_path(version.source_artifact), keras_file)
        low, high = version.preprocessing.get("scale", [-1.0, 1.0])
        port = free_port()
        process = subprocess.Popen(  # noqa: S603 - our own peer script, fixed arguments
            [
                sys.executable,
                "-m",
                "bench.naive_peer",
                str(keras_file),
                str(labels),
                str(port),
                str(version.input_size),
                str(low),
                str(high),
            ],
            cwd=settings.BASE_DIR,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = Server(url=f"http://127.0.0.1:{port}", process=process)
        try:
            _wait_http(f"{server.url}/health", process)
            yield server
        finally:
            process.terminate()
            process.wait(timeout=30)

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
        self.stdout.write(f"Plots written to {folder}")
