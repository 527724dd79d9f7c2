"""The registration pipeline: how a model of any kind becomes a version in the registry.

A kind implements ``KindRegistration``: it builds or loads its source and converts it to LiteRT
(``convert``), measures LiteRT against the source framework (``parity_check``) and says what the
version records (``describe``). ``version_register`` does the rest once for every kind: it
checks that serving can apply the kind's preprocessing, refuses a parity difference at or beyond
the tolerance, stores every artifact in the content-addressed model store, creates the next
version of the name in a transaction, puts it in its stage and logs it. When a step fails,
nothing is stored and no version is created. The manifest (``manifest.py``) carries any kind's
fields and stored files without knowing the kind.

The kinds: ``classifier.py`` (``model_version_register``), ``multi_task.py``
(``multi_task_version_register``) and ``clip.py`` (``zero_shot_register``).
"""

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from PIL import Image

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.versions import model_version_create, model_version_stage_put
from classification.serving.imaging import (
    DEFAULT_PREPROCESSING,
    DRAFT_MARGIN_OPTION,
    image_preprocess,
    jpeg_draft_margin,
)
from classification.store import StoredArtifact, artifact_put_bytes, artifact_put_file

logger = logging.getLogger(__name__)

# LiteRT must agree with the source framework within this on every output compared.
PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Artifact:
    """A file to keep in the model store: bytes, or a file on disk."""

    content: bytes | Path
    suffix: str = ""  # of its name in the store; a file's own suffix when empty


@dataclass(frozen=True)
class Parity:
    """What a kind's parity check measured: LiteRT against ``reference`` on the same inputs."""

    reference: str  # the source framework, for messages: "TensorFlow", "Keras"
    # The largest absolute difference per output compared (e.g. "probabilities"); None where
    # there was nothing to compare with (a LiteRT file registered as it is).
    differences: dict[str, float | None]
    metrics: dict  # what the version records as its metrics: these figures, timings, ...


@dataclass(frozen=True)
class VersionRecord:
    """What a new version records about itself, its files not yet stored."""

    source_format: str  # a ModelVersion.Format
    source_artifact: Artifact  # the source as registered, kept for retraining
    artifact: Artifact  # the LiteRT flat buffer that serving loads
    labels: list[str]
    input_size: int
    source: str = ""  # where the weights came from, unless the caller says
    tag_labels: list[str] | None = None
    # The kind's own ModelVersion fields (e.g. tag_thresholds, zero_shot). An Artifact anywhere
    # inside them is stored and replaced by its reference {"artifact": name, "sha256": hex}.
    fields: dict[str, Any] = field(default_factory=dict)


Converted = TypeVar("Converted")


class KindRegistration(Protocol[Converted]):
    """What the pipeline asks of one model kind; ``Converted`` is whatever its steps pass on.

    The kind's constructor takes and checks its own arguments (labels, thresholds...), raising
    ModelRegistrationError for bad ones. Every step raises ModelRegistrationError when the
    source cannot be used.
    """

    @property
    def kind(self) -> str:
        """The ModelVersion.Kind recorded, which serving's MODEL_KINDS must know."""
        ...

    @property
    def preprocessing(self) -> dict:
        """How serving prepares pixels for this version (every option, defaults included)."""
        ...

    def convert(self) -> Converted:
        """Build or load the source, convert it to LiteRT and check its shapes."""
        ...

    def parity_check(self, converted: Converted) -> Parity:
        """Run LiteRT and the source framework on the same inputs (in the range that
        ``preprocessing`` produces) and report how far apart they are."""
        ...

    def describe(self, converted: Converted, *, workdir: Path) -> VersionRecord:
        """What the version records. Files to store may be written to ``workdir``, which lasts
        until they are stored."""
        ...


def preprocessing_with_defaults(preprocessing: dict | None) -> dict:
    """``preprocessing`` over the default options (DEFAULT_PREPROCESSING)."""
    return {**DEFAULT_PREPROCESSING, **(preprocessing or {})}


def preprocessing_input_range(preprocessing: dict) -> tuple[float, float]:
    """The range ``preprocessing`` scales pixels to, where parity checks draw their inputs."""
    low, high = (float(bound) for bound in preprocessing["scale"])
    return low, high


def _preprocessing_check(preprocessing: dict) -> None:
    """Refuse options serving cannot apply: every request to the version would fail."""
    if DRAFT_MARGIN_OPTION in preprocessing and jpeg_draft_margin(preprocessing) is None:
        raise ModelRegistrationError(
            f"The preprocessing's {DRAFT_MARGIN_OPTION} must be a number of at least 1, not "
            f"{preprocessing[DRAFT_MARGIN_OPTION]!r}."
        )
    try:
        image_preprocess(image=Image.new("RGB", (2, 2)), input_size=1, preprocessing=preprocessing)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelRegistrationError(
            f"The preprocessing {preprocessing} cannot be applied: {exc}"
        ) from exc


def _parity_enforce(parity: Parity, *, tolerance: float) -> None:
    for what, difference in parity.differences.items():
        if difference is not None and difference >= tolerance:
            raise ModelRegistrationError(
                f"LiteRT and {parity.reference} disagree by {difference:.2e} on the {what} "
                f"(the limit is {tolerance:.0e}); the model was not registered."
            )


def _artifact_store(artifact: Artifact) -> StoredArtifact:
    if isinstance(artifact.content, bytes):
        return artifact_put_bytes(data=artifact.content, suffix=artifact.suffix)
    path = artifact.content
    return artifact_put_file(path=path, suffix=artifact.suffix or path.suffix.lower())


def _artifacts_stored(value: Any) -> Any:
    """``value`` with every Artifact inside it stored and replaced by its reference."""
    if isinstance(value, Artifact):
        return _artifact_store(value).reference
    if isinstance(value, dict):
        return {key: _artifacts_stored(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_artifacts_stored(item) for item in value]
    return value


def version_register(
    *,
    registration: KindRegistration[Any],
    name: str,
    stage: str = ModelVersion.Stage.STAGING,
    source: str = "",
    tolerance: float = PARITY_TOLERANCE,
    metrics: dict | None = None,
) -> ModelVersion:
    """Convert, check, store and register ``registration`` as the next version of ``name``.

    ``metrics`` (figures of checks the caller ran before, such as a source's own reference
    comparison) are added to those of the kind's parity check. Raises ModelRegistrationError
    when any step refuses the model (nothing is stored or registered then).
    """
    preprocessing = dict(registration.preprocessing)
    _preprocessing_check(preprocessing)
    converted = registration.convert()
    parity = registration.parity_check(converted)
    _parity_enforce(parity, tolerance=tolerance)
    with tempfile.TemporaryDirectory() as workdir:
        record = registration.describe(converted, workdir=Path(workdir))
        stored_source = _artifact_store(record.source_artifact)
        served = _artifact_store(record.artifact)
        kind_fields = _artifacts_stored(record.fields)
    model_version = model_version_create(
        name=name,
        kind=registration.kind,
        source_format=record.source_format,
        source_artifact=stored_source.name,
        source_sha256=stored_source.sha256,
        artifact=served.name,
        artifact_sha256=served.sha256,
        artifact_size=served.size,
        labels=list(record.labels),
        tag_labels=None if record.tag_labels is None else list(record.tag_labels),
        input_size=record.input_size,
        preprocessing=preprocessing,
        metrics={**parity.metrics, **(metrics or {})},
        source=source or record.source,
        **kind_fields,
    )
    logger.info(
        "Registered %s (LiteRT-%s parity %s)", model_version, parity.reference, parity.differences
    )
    return model_version_stage_put(model_version=model_version, stage=stage)
