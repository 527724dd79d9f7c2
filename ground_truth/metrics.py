"""Prometheus metrics of ground truth (imported in GroundTruthConfig.ready)."""

from prometheus_client import Counter, Gauge, Histogram

from core.metrics import REGISTRY

# --- Shadow evaluation ----------------------------------------------------------------------
SHADOW_PREDICTIONS = Counter(
    "classifier_shadow_predictions",
    "Shadow predictions written, by shadowed (staging) model name, version and whether its "
    "top label agreed with production's.",
    ["model", "version", "agrees"],
    registry=REGISTRY,
)
SHADOW_DROPPED = Counter(
    "classifier_shadow_dropped",
    "Sampled production answers a shadowed version did not get: the shadow queue was full, or "
    "the worker stopped with them queued.",
    ["model", "version"],
    registry=REGISTRY,
)
SHADOW_ERRORS = Counter(
    "classifier_shadow_errors",
    "Shadow predictions that failed, by version and reason (image: undecodable or refused, "
    "load: the version would not load, write: the database refused the rows).",
    ["model", "version", "reason"],
    registry=REGISTRY,
)
SHADOW_LATENCY = Histogram(
    "classifier_shadow_latency_seconds",
    "A shadowed version's decode, preprocessing and inference time per image.",
    ["model", "version"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
SHADOW_QUEUE_DEPTH = Gauge(
    "classifier_shadow_queue_depth",
    "Images queued for shadow evaluation and not answered yet, in live workers.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
