"""In-process inference with LiteRT: one loaded model per name per process.

The runtime is created lazily (never at import time), loads the production version that the
registry names, warms it up once, and re-asks the registry every MODEL_REFRESH_SECONDS so that a
promotion reaches every worker without a restart. A LiteRT interpreter is not thread-safe, so
each loaded model serialises its invocations behind its own lock.

Each model kind is served by its own module (``classifier``, ``multi_task``, ``zero_shot``),
which implements ``Servable`` on the LiteRT wrapper of ``litert``; ``MODEL_KINDS`` names them.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from django.conf import settings
from django.db import DatabaseError

from classification import metrics, selectors
from classification.exceptions import (
    InvalidClassificationRequest,
    ModelNotReady,
    ModelRegistrationError,
    UnknownModel,
)
from classification.models import ModelVersion
from classification.serving.classifier import ClassifierServable
from classification.serving.litert import LiteRTClassifier
from classification.serving.multi_task import MultiTaskServable
from classification.serving.zero_shot import ZeroShotServable
from classification.store import artifact_read_verified
from core.metrics import labelled
from core.singleton import ProcessSingleton

logger = logging.getLogger(__name__)


class Servable(Protocol):
    """What the engine asks of a loaded model, whatever its kind: one interface, several kinds.

    A kind loads its flat buffer, checks it against the registry's record, warms up, and turns
    one preprocessed batch into the answer's scores.
    """

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Scores of the first (only) image in ``batch``, one per label, in [0, 1]."""
        ...

    def warm_up(self) -> None: ...


@runtime_checkable
class LabelledServable(Servable, Protocol):
    """A kind that also scores against labels chosen per request (zero-shot)."""

    def labels_check(self, labels: list[str]) -> None:
        """Raise InvalidClassificationRequest unless the kind can score these labels."""
        ...

    def run_labels(self, batch: np.ndarray, *, labels: list[str]) -> np.ndarray:
        """Scores of the first image in ``batch``, one per label of ``labels``, in [0, 1]."""
        ...


# Every kind the registry can record, implemented once each (docs/adding-a-model-kind.md).
MODEL_KINDS: dict[str, Callable[..., Servable]] = {
    ModelVersion.Kind.CLASSIFIER: ClassifierServable,
    ModelVersion.Kind.MULTI_TASK: MultiTaskServable,
    ModelVersion.Kind.ZERO_SHOT: ZeroShotServable,
}


@dataclass(frozen=True)
class ServingModel:
    """A production model version, loaded and ready to answer."""

    version_id: int
    name: str
    version: int
    kind: str
    labels: list[str]
    input_size: int
    preprocessing: dict
    servable: Servable = field(repr=False)
    load_seconds: float = 0.0
    # A multi-task version's tag head: its labels and the thresholds from which a tag is present.
    tag_labels: list[str] = field(default_factory=list)
    tag_thresholds: list[float] = field(default_factory=list)

    @property
    def default_top_k(self) -> int:
        """How many predictions an answer gives when the request does not say."""
        return getattr(self.servable, "default_top_k", settings.CLASSIFY_DEFAULT_TOP_K)

    @property
    def classifier(self) -> LiteRTClassifier:
        """The LiteRT interpreter itself (benchmarks and health probes call it directly)."""
        return self.servable.interpreter  # type: ignore[attr-defined]

    def probabilities(self, batch: np.ndarray, *, labels: list[str] | None = None) -> np.ndarray:
        """Scores per label: the version's labels, or ``labels`` (checked by ``labels_check``)."""
        labelled(metrics.INFERENCE_BATCH_SIZE, self.name).observe(len(batch))
        if labels is None:
            return self.servable.run(batch)
        assert isinstance(self.servable, LabelledServable)
        return self.servable.run_labels(batch, labels=labels)

    def labels_check(self, labels: list[str]) -> None:
        """Raise InvalidClassificationRequest unless this model can score ``labels``."""
        if not isinstance(self.servable, LabelledServable):
            raise InvalidClassificationRequest(
                f"labels: model {self.name!r} is a {self.kind} model with fixed labels; "
                "per-request labels need a zero-shot model."
            )
        self.servable.labels_check(labels)

    def heads(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The label probabilities and, for a model with a tag head, the tag probabilities
        (None otherwise), from one invocation."""
        run_heads = getattr(self.servable, "run_heads", None)
        if run_heads is None:
            return self.probabilities(batch), None
        labelled(metrics.INFERENCE_BATCH_SIZE, self.name).observe(len(batch))
        return run_heads(batch)


def serving_model_load(model_version: ModelVersion) -> ServingModel:
    """Load, check and warm up one registered version. Raises ModelRegistrationError."""
    started = time.perf_counter()
    kind = MODEL_KINDS.get(model_version.kind)
    if kind is None:
        raise ModelRegistrationError(f"{model_version} is of unknown kind {model_version.kind!r}.")
    content = artifact_read_verified(
        name=model_version.artifact, sha256=model_version.artifact_sha256
    )
    servable = kind(model_version=model_version, content=content)
    servable.warm_up()
    return ServingModel(
        version_id=model_version.pk,
        name=model_version.name,
        version=model_version.version,
        kind=model_version.kind,
        labels=list(model_version.labels),
        input_size=model_version.input_size,
        preprocessing=dict(model_version.preprocessing),
        servable=servable,
        load_seconds=time.perf_counter() - started,
        tag_labels=list(getattr(servable, "tag_labels", [])),
        tag_thresholds=list(getattr(servable, "tag_thresholds", [])),
    )


@dataclass
class _Slot:
    model: ServingModel | None = None
    checked_at: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelRuntime:
    """The serving models of this process, kept in step with the registry."""

    def __init__(self, *, refresh_seconds: float) -> None:
        self.refresh_seconds = refresh_seconds
        self._slots: dict[str, _Slot] = {}
        self._slots_lock = threading.Lock()
        self._default_name: tuple[str | None, float] = (None, float("-inf"))
        self._failed_versions: set[int] = set()

    def serving_model(self, name: str | None = None) -> ServingModel:
        """The production model called ``name`` (or the default model), loaded.

        Raises UnknownModel when no such name is registered, ModelNotReady when it has no
        production version that loads.
        """
        name = name or self._default_model_name()
        with self._slots_lock:
            slot = self._slots.setdefault(name, _Slot())
        with slot.lock:
            now = time.monotonic()
            if slot.model is None or now - slot.checked_at >= self.refresh_seconds:
                try:
                    slot.model = self._current(name, loaded=slot.model)
                except DatabaseError:
                    if slot.model is None:
                        raise
                    # The registry cannot be read (a database blip): keep answering with the
                    # version loaded, and ask again at the next refresh.
                    logger.warning("Registry unreachable; still serving %s", slot.model.name)
                slot.checked_at = now
            return slot.model

    def _default_model_name(self) -> str:
        name, checked_at = self._default_name
        if name is None or time.monotonic() - checked_at >= self.refresh_seconds:
            try:
                found = selectors.model_default_name()
            except DatabaseError:
                if name is None:
                    raise
                return name  # a database blip: the default known last still stands
            name = found
            if name is None:
                raise ModelNotReady()
            self._default_name = (name, time.monotonic())
        return name

    def _current(self, name: str, *, loaded: ServingModel | None) -> ServingModel:
        production = selectors.model_version_production(name=name)
        if production is None:
            if not selectors.model_name_exists(name=name):
                raise UnknownModel(f"No model called {name!r} is registered.")
            raise ModelNotReady(f"Model {name!r} has no version in production.")
        if loaded is not None and loaded.version_id == production.pk:
            return loaded
        try:
            model = serving_model_load(production)
        except ModelRegistrationError as exc:
            if production.pk not in self._failed_versions:  # log a lasting fault once
                self._failed_versions.add(production.pk)
                metrics.MODEL_LOAD_FAILURES.labels(name).inc()
                logger.error(
                    "Cannot load %s: %s",
                    production,
                    exc,
                    extra={"model": name, "model_version": production.version},
                )
            if loaded is not None:
                return loaded  # keep answering with the version that works
            raise ModelNotReady(f"Model {name!r} could not be loaded.") from exc
        logger.info(
            "Serving %s v%s (loaded in %.3f s)",
            model.name,
            model.version,
            model.load_seconds,
            extra={"model": model.name, "model_version": model.version},
        )
        metrics.MODEL_LOAD_SECONDS.labels(model.name).observe(model.load_seconds)
        if loaded is not None:
            metrics.MODEL_SERVED.labels(loaded.name, str(loaded.version)).set(0)
        metrics.MODEL_SERVED.labels(model.name, str(model.version)).set(1)
        return model


_runtime = ProcessSingleton(lambda: ModelRuntime(refresh_seconds=settings.MODEL_REFRESH_SECONDS))


def get_runtime() -> ModelRuntime:
    """The process-wide runtime, created on first use."""
    return _runtime.get()


def reset_runtime() -> None:
    """Forget every loaded model (tests, and after settings change)."""
    _runtime.reset()
