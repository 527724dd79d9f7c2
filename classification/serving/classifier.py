"""The ``classifier`` model kind: one LiteRT model, a softmax over the version's labels."""

import numpy as np
from django.conf import settings

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.serving.litert import LiteRTClassifier, softmax


class ClassifierServable:
    """The ``classifier`` kind: a softmax over labels (logit outputs are softmaxed here)."""

    def __init__(self, *, model_version: ModelVersion, content: bytes) -> None:
        self.name = model_version.name
        self.interpreter = LiteRTClassifier(
            model_content=content, num_threads=settings.LITERT_NUM_THREADS
        )
        self.input_size = size = model_version.input_size
        shape, outputs = self.interpreter.input_shape, self.interpreter.output_size
        if shape != (1, size, size, 3) or outputs != len(model_version.labels):
            raise ModelRegistrationError(
                f"{model_version} takes {shape} and gives {outputs} outputs, but the registry "
                f"says {size}x{size} and {len(model_version.labels)} labels."
            )
        self.outputs_logits = model_version.metrics.get("outputs") == "logits"

    def warm_up(self) -> None:
        size = self.input_size
        self.interpreter.invoke(np.zeros((1, size, size, 3), dtype=np.float32))

    def run(self, batch: np.ndarray) -> np.ndarray:
        outputs = self.interpreter.invoke(batch)[0]
        return softmax(outputs) if self.outputs_logits else outputs
