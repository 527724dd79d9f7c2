"""Shadow evaluation: staging versions answer a sampled share of live production requests,
off the request path, and their answers are stored beside production's.

The request thread only samples and queues (``shadow_on_answer``, the receiver of
``classify_request_answered``): it reads an in-memory list of the shadowed versions, draws,
and appends the image bytes it already holds to a bounded queue; a full queue (or one holding
SHADOW_QUEUE_MAX_BYTES) drops the image (``classifier_shadow_dropped_total``), never waits.
One thread per worker process (``ShadowEvaluator``, started and stopped by the worker hooks)
refreshes that list from the registry at most every MODEL_REFRESH_SECONDS, loads each shadowed
version once, runs the image through the version's own decode and preprocessing, and inserts
the ShadowPrediction rows in bulk. Its failures (an undecodable image, a version that will not
load, the database) are counted and logged, never raised into a request.

Without a running evaluator (management commands, tests that do not open one) nothing is
sampled.
"""

import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from rest_framework.request import Empty, Request

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.serving.engine import ServingModel, serving_model_load
from classification.serving.services import serving_model_classify
from core.failures import FailureCounter
from core.metrics import labelled
from core.middleware import request_id, requests_in_flight
from ground_truth import metrics
from ground_truth.models import ShadowPrediction

logger = logging.getLogger(__name__)

shadow_failures = FailureCounter("Shadow evaluation")

# Images ``run_pending`` answers before it writes their rows (one INSERT); the thread takes
# one at a time, between requests.
_BATCH = 16
# How long the thread waits for an idle worker before it looks at the stop flag again.
_IDLE_WAIT_SECONDS = 0.5


@dataclass(frozen=True)
class ShadowTarget:
    """A staging version shadowed on ``share`` of its name's production answers."""

    version_id: int
    name: str
    version: int
    share: float
    # The registry row, loaded by the thread: a job sampled while the version was shadowed is
    # answered even if the version left staging since.
    model_version: ModelVersion = field(compare=False, repr=False)


@dataclass(frozen=True)
class ShadowJob:
    """One sampled production answer, and the shadowed versions that are to answer it too."""

    request_id: str
    image: bytes
    labels: list[str] | None  # a zero-shot request's own labels
    production_version_id: int | None
    production_label: str
    production_confidence: float
    targets: tuple[ShadowTarget, ...]


@dataclass(frozen=True)
class _Registry:
    """What the request thread reads: shadowed versions by name, production versions' ids."""

    targets: Mapping[str, tuple[ShadowTarget, ...]]
    production_ids: Mapping[tuple[str, int], int]


class ShadowEvaluator:
    """This process's shadow queue and the thread that answers it."""

    def __init__(self) -> None:
        self._jobs: deque[ShadowJob] = deque()
        self._bytes = 0  # of the queued images
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._open = False
        self._stopping = False
        self.capacity = 0
        # Sampling, not secrets; seeded by tests.
        self.random = random.Random()  # noqa: S311
        self._registry = _Registry(targets={}, production_ids={})
        self._refreshed_at = float("-inf")
        self._versions: dict[int, ModelVersion] = {}
        self._models: dict[int, ServingModel] = {}
        self._failed_loads: set[int] = set()
        # Counts of this process, for tests and the benchmark (the metrics add up workers).
        self.queued = self.dropped = self.written = self.failed = 0

    # --- The request thread's side ----------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self._open and not self._stopping

    def targets(self, name: str) -> tuple[ShadowTarget, ...]:
        """The versions shadowed on ``name``'s answers, as last read (no database access)."""
        return self._registry.targets.get(name, ())

    def offer(
        self,
        *,
        request_id: str,
        image: bytes,
        model_name: str,
        model_version: int,
        label: str,
        confidence: float,
        labels: list[str] | None = None,
    ) -> ShadowJob | None:
        """Sample one production answer for each version shadowed on ``model_name`` and queue
        it for those drawn; the job queued, or None (none drawn, not accepting, or dropped)."""
        if not self.accepting:
            return None
        registry = self._registry
        drawn = tuple(
            target
            for target in registry.targets.get(model_name, ())
            if self.random.random() < target.share
        )
        if not drawn:
            return None
        job = ShadowJob(
            request_id=request_id,
            image=image,
            labels=labels,
            production_version_id=registry.production_ids.get((model_name, model_version)),
            production_label=label,
            production_confidence=confidence,
            targets=drawn,
        )
        with self._lock:
            full = (
                len(self._jobs) >= self.capacity
                or self._bytes + len(image) > settings.SHADOW_QUEUE_MAX_BYTES
            )
            if full:
                self.dropped += 1
            else:
                self._jobs.append(job)
                self._bytes += len(image)
                self.queued += 1
                if len(self._jobs) == 1:
                    self._wake.notify()
        if full:
            _count_dropped(job)
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning(
                    "The shadow queue is full (%d images): %d dropped so far",
                    self.capacity,
                    self.dropped,
                )
            return None
        metrics.SHADOW_QUEUE_DEPTH.inc()
        return job

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    # --- Starting and stopping --------------------------------------------------------------

    def open(self) -> None:
        """Accept jobs (up to SHADOW_QUEUE_SIZE) without a thread: ``run_pending`` answers
        them on the caller's thread (tests). ``start`` opens and starts the thread."""
        with self._lock:
            self.capacity = settings.SHADOW_QUEUE_SIZE
            self._open = self.capacity > 0
            self._stopping = False
        self.refresh(force=True)

    def start(self) -> None:
        """Start this process's thread (nothing if running, or with SHADOW_QUEUE_SIZE 0)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
        self.open()
        if not self._open:
            return
        with self._lock:
            self._thread = threading.Thread(target=self._run, name="shadow-evaluator", daemon=True)
            self._thread.start()

    def stop(self, *, timeout: float = 2.0) -> None:
        """Stop accepting, let the thread finish the image it is on (within ``timeout``), and
        drop what is still queued (counted): shadow answers are evidence, not a promise."""
        with self._lock:
            thread = self._thread
            self._stopping = True
            self._wake.notify_all()
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            rest = list(self._jobs)
            self._jobs.clear()
            self._bytes = 0
            self._thread = None
            self._open = False
        for job in rest:
            _count_dropped(job)
        if rest:
            self.dropped += len(rest)
            metrics.SHADOW_QUEUE_DEPTH.dec(len(rest))
        self._models.clear()

    # --- The thread's side --------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Read the shadowed versions from the registry (at most every MODEL_REFRESH_SECONDS
        unless ``force``); forget the loaded models of versions no longer shadowed."""
        now = time.monotonic()
        if not force and now - self._refreshed_at < settings.MODEL_REFRESH_SECONDS:
            return
        self._refreshed_at = now
        try:
            shadowed = list(
                ModelVersion.objects.filter(
                    stage=ModelVersion.Stage.STAGING, shadow_share__gt=0
                ).order_by("name", "version")
            )
            names = {version.name for version in shadowed}
            production = ModelVersion.objects.filter(
                stage=ModelVersion.Stage.PRODUCTION, name__in=names
            ).values_list("name", "version", "pk")
            production_ids = {(name, version): pk for name, version, pk in production}
        except Exception as exc:  # a database blip: keep the versions read last
            shadow_failures.failed(exc)
            return
        targets: dict[str, list[ShadowTarget]] = {}
        for version in shadowed:
            targets.setdefault(version.name, []).append(
                ShadowTarget(
                    version_id=version.pk,
                    name=version.name,
                    version=version.version,
                    share=min(1.0, version.shadow_share),
                    model_version=version,
                )
            )
        current = {version.pk: version for version in shadowed}
        for version_id in set(self._models) - set(current):
            del self._models[version_id]
        # A changed shadow set is a chance for a version that failed to load to load now.
        if set(current) != set(self._versions):
            self._failed_loads.clear()
        self._versions = current
        self._registry = _Registry(
            targets={name: tuple(found) for name, found in targets.items()},
            production_ids=production_ids,
        )

    def run_pending(self, *, limit: int | None = None) -> int:
        """Answer queued jobs on this thread (up to ``limit``) and write their rows; the number
        of rows written."""
        written = 0
        while limit is None or limit > 0:
            with self._lock:
                batch = [
                    self._jobs.popleft()
                    for _ in range(min(len(self._jobs), _BATCH if limit is None else limit))
                ]
                self._bytes -= sum(len(job.image) for job in batch)
            if not batch:
                break
            if limit is not None:
                limit -= len(batch)
            metrics.SHADOW_QUEUE_DEPTH.dec(len(batch))
            written += self._answer(batch)
        return written

    def _run(self) -> None:
        # Shadow work never delays an answer: it runs only while this worker answers no request
        # (core.middleware.requests_in_flight), one image at a time, so a request that arrives
        # meanwhile waits for at most one shadow image. A worker that is never idle fills its
        # queue, and what does not fit is dropped and counted. (No lower thread priority: a
        # descheduled shadow thread holding the GIL would make the request threads wait longer.)
        while True:
            with self._lock:
                if not self._jobs and not self._stopping:
                    # Wake at least every refresh interval, to follow the registry.
                    self._wake.wait(max(0.1, settings.MODEL_REFRESH_SECONDS))
                if self._stopping:
                    break
            if not requests_in_flight.wait_idle(timeout=_IDLE_WAIT_SECONDS):
                continue
            try:
                close_old_connections()
                self.refresh()
                self.run_pending(limit=1)
            except Exception as exc:  # never let the thread die
                shadow_failures.failed(exc)
                with contextlib.suppress(Exception):
                    connection.close()
                time.sleep(0.5)
        with contextlib.suppress(Exception):
            connection.close()

    def _answer(self, batch: list[ShadowJob]) -> int:
        answered: list[tuple[ShadowPrediction, ShadowTarget]] = []
        for job in batch:
            for target in job.targets:
                row = self._predict(job, target)
                if row is not None:
                    answered.append((row, target))
        if not answered:
            return 0
        try:
            # A repeated request id (a client's reused X-Request-ID) keeps its first row.
            ShadowPrediction.objects.bulk_create(
                [row for row, _ in answered], ignore_conflicts=True
            )
        except Exception as exc:
            self.failed += len(answered)
            for _, target in answered:
                labelled(metrics.SHADOW_ERRORS, target.name, str(target.version), "write").inc()
            shadow_failures.failed(exc)
            return 0
        shadow_failures.recovered()
        self.written += len(answered)
        for row, target in answered:
            labelled(
                metrics.SHADOW_PREDICTIONS,
                target.name,
                str(target.version),
                str(row.agrees).lower(),
            ).inc()
        return len(answered)

    def _predict(self, job: ShadowJob, target: ShadowTarget) -> ShadowPrediction | None:
        model = self._model(target)
        if model is None:
            self.failed += 1
            labelled(metrics.SHADOW_ERRORS, target.name, str(target.version), "load").inc()
            return None
        started = time.perf_counter()
        try:
            result = serving_model_classify(
                model=model, image_bytes=job.image, top_k=1, labels=job.labels
            )
        except Exception as exc:  # undecodable for this version, labels it cannot score
            self.failed += 1
            labelled(metrics.SHADOW_ERRORS, target.name, str(target.version), "image").inc()
            logger.info("Shadow %s v%s: %s", target.name, target.version, exc)
            return None
        latency = time.perf_counter() - started
        labelled(metrics.SHADOW_LATENCY, target.name, str(target.version)).observe(latency)
        return ShadowPrediction(
            request_id=job.request_id,
            shadow_version_id=target.version_id,
            production_version_id=job.production_version_id,
            production_label=job.production_label,
            production_confidence=job.production_confidence,
            label=result.classification,
            confidence=result.confidence,
            agrees=result.classification == job.production_label,
            latency_seconds=latency,
        )

    def _model(self, target: ShadowTarget) -> ServingModel | None:
        """The loaded version (once per process), or None when it does not load."""
        model = self._models.get(target.version_id)
        if model is not None:
            return model
        if target.version_id in self._failed_loads:
            return None
        try:
            model = serving_model_load(target.model_version)
        except (ModelRegistrationError, OSError) as exc:
            self._failed_loads.add(target.version_id)  # logged once, tried again on a change
            logger.error("Cannot load shadowed %s: %s", target.model_version, exc)
            return None
        self._models[target.version_id] = model
        logger.info("Shadowing %s (loaded in %.3f s)", target.model_version, model.load_seconds)
        return model


def _count_dropped(job: ShadowJob) -> None:
    for target in job.targets:
        labelled(metrics.SHADOW_DROPPED, target.name, str(target.version)).inc()


_evaluator = ShadowEvaluator()


def shadow_evaluator() -> ShadowEvaluator:
    """This process's evaluator (accepting only once started or opened)."""
    return _evaluator


def shadow_evaluator_start() -> None:
    """Worker-start hook: start this worker's shadow thread."""
    _evaluator.start()


def shadow_evaluator_stop() -> None:
    """Worker-exit hook: stop the thread; what is still queued is dropped (counted)."""
    _evaluator.stop()


def shadow_on_answer(
    sender: object, *, request: Request, status_code: int, result: Any, **_: Any
) -> None:
    """Receiver of classify_request_answered: offer a successful answer whose image bytes are
    in hand to the versions shadowed on its model. Never raises, never waits."""
    try:
        evaluator = _evaluator
        if status_code >= 400 or result is None or not evaluator.accepting:
            return
        image = getattr(result, "image_data", None)
        if not image or not evaluator.targets(result.model_name):
            return
        evaluator.offer(
            request_id=request_id(getattr(request, "_request", request)),
            image=image,
            model_name=result.model_name,
            model_version=result.model_version,
            label=result.classification,
            confidence=result.confidence,
            labels=_request_labels(request),
        )
    except Exception as exc:  # shadowing must never break the answer
        shadow_failures.failed(exc)


def _request_labels(request: Request) -> list[str] | None:
    # Only a body that was already parsed (as the request log reads it).
    data = vars(request).get("_full_data", Empty)
    if data is Empty or not isinstance(data, Mapping):
        return None
    getlist = getattr(data, "getlist", None)  # a multipart form: one field per label
    labels = getlist("labels") if getlist is not None else data.get("labels")
    if isinstance(labels, list) and labels and all(isinstance(label, str) for label in labels):
        return labels
    return None
