"""Where registered models come from: each module fetches one family of models.

Nothing here runs at import time or on the request path; the management command
``fetch_model`` calls these functions once per machine.
"""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ModelSource:
    """A model artifact ready to register, with what the registry records about it."""

    artifact_path: Path
    labels: list[str]
    input_size: int
    source: str
    # Per-version preprocessing options (see classification.serving.imaging); empty: defaults.
    preprocessing: dict = field(default_factory=dict)
