"""What a classification answers, and where its image comes from."""

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float


@dataclass(frozen=True)
class TagPrediction:
    """One tag of a multi-task model: its probability, and whether it reaches its threshold."""

    label: str
    probability: float
    present: bool


@dataclass
class ClassificationResult:
    predictions: list[Prediction]
    model_name: str
    model_version: int
    image_sha256: str
    cached: bool = False
    cache_kind: str | None = None  # "url" or "image" when the answer came from the cache
    processing_time: float = 0.0
    # Seconds spent in each stage, for benchmarks and metrics.
    timings: dict[str, float] = field(default_factory=dict)
    # For model monitoring: "width" and "height" of the decoded image, "brightness" (mean luma,
    # 0-255) of the pixels the model saw. Kept in cache entries, so cached answers carry them.
    input_stats: dict[str, float] = field(default_factory=dict)
    # A multi-task model's tags, in its tag-label order; None for models without a tag head.
    tags: list[TagPrediction] | None = None
    # The image bytes this request had in hand (an upload, base64, or the body a URL fetch
    # downloaded); None for a URL cache hit, which downloads nothing. Never part of the answer:
    # for the apps that listen to classify_request_answered (a shadowed version answers them).
    image_data: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def classification(self) -> str:
        return self.predictions[0].label

    @property
    def confidence(self) -> float:
        return self.predictions[0].confidence


@dataclass(frozen=True)
class ImageSource:
    """Where a request's image comes from: bytes it carried, or a URL to fetch."""

    kind: Literal["upload", "base64", "url"]
    data: bytes | None = None
    url: str | None = None
