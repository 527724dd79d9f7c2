"""What a classification answers, and where its image comes from."""

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float


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
