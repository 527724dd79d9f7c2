"""The ``multi_task`` model kind: one LiteRT model, a category softmax and a tag sigmoid head.

The flat buffer's serving signature names its outputs ``category`` (one probability per label,
summing to 1) and ``tags`` (one independent probability per tag label). A tag is present when
its probability reaches the version's tuned threshold.
"""

import threading

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from django.conf import settings

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion

CATEGORY_HEAD = "category"
TAGS_HEAD = "tags"
HEADS = (CATEGORY_HEAD, TAGS_HEAD)
# The marketplace shows a listing's two most likely categories.
DEFAULT_TOP_K = 2


class LiteRTHeads:
    """A LiteRT model with named outputs, safe to call from many threads.

    ``invoke`` answers the category head (what health probes and benchmarks time), like
    ``LiteRTClassifier.invoke``; ``invoke_heads`` answers every head of a batch of any size.
    """

    def __init__(self, *, model_content: bytes, num_threads: int) -> None:
        self._interpreter = Interpreter(model_content=model_content, num_threads=num_threads)
        signatures = self._interpreter.get_signature_list()
        if len(signatures) != 1:
            raise ModelRegistrationError(
                f"A multi-task model has one serving signature, not {sorted(signatures)}."
            )
        ((key, signature),) = signatures.items()
        if sorted(signature["outputs"]) != sorted(HEADS) or len(signature["inputs"]) != 1:
            raise ModelRegistrationError(
                f"A multi-task model takes one image and answers {HEADS}; this one takes "
                f"{signature['inputs']} and answers {signature['outputs']}."
            )
        self._runner = self._interpreter.get_signature_runner(key)
        (self._input_name,) = signature["inputs"]
        input_details = self._runner.get_input_details()[self._input_name]
        outputs = self._runner.get_output_details()
        self.input_shape = tuple(int(d) for d in input_details["shape"])
        self.head_sizes = {head: int(outputs[head]["shape"][-1]) for head in HEADS}
        self.output_size = self.head_sizes[CATEGORY_HEAD]
        self._lock = threading.Lock()

    def invoke_heads(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Each head's outputs for ``batch`` (N, S, S, 3); the input is resized to N."""
        with self._lock:
            outputs = self._runner(**{self._input_name: batch})
        return {head: np.array(outputs[head], copy=True) for head in HEADS}

    def invoke(self, batch: np.ndarray) -> np.ndarray:
        return self.invoke_heads(batch)[CATEGORY_HEAD]


def multi_task_shape_check(
    *, heads: LiteRTHeads, input_size: int, labels: list, tag_labels: list, name: str
) -> None:
    """Raise ModelRegistrationError unless the model's input and heads match the record."""
    expected = {CATEGORY_HEAD: len(labels), TAGS_HEAD: len(tag_labels)}
    shape = heads.input_shape
    if shape[1:] != (input_size, input_size, 3) or heads.head_sizes != expected:
        raise ModelRegistrationError(
            f"{name} takes {shape} and answers {heads.head_sizes}, but the registry says "
            f"{input_size}x{input_size} and {expected}."
        )


class MultiTaskServable:
    """The ``multi_task`` kind: ``run`` gives the category probabilities (the Servable
    interface), ``run_tags`` the tag probabilities, ``run_heads`` both from one invoke."""

    default_top_k = DEFAULT_TOP_K

    def __init__(self, *, model_version: ModelVersion, content: bytes) -> None:
        self.name = model_version.name
        self.interpreter = LiteRTHeads(
            model_content=content, num_threads=settings.LITERT_NUM_THREADS
        )
        self.input_size = model_version.input_size
        self.tag_labels = list(model_version.tag_labels or [])
        multi_task_shape_check(
            heads=self.interpreter,
            input_size=self.input_size,
            labels=list(model_version.labels),
            tag_labels=self.tag_labels,
            name=str(model_version),
        )
        thresholds = model_version.tag_thresholds or [0.5] * len(self.tag_labels)
        if len(thresholds) != len(self.tag_labels):
            raise ModelRegistrationError(
                f"{model_version} has {len(thresholds)} tag thresholds for "
                f"{len(self.tag_labels)} tags."
            )
        self.tag_thresholds = [float(value) for value in thresholds]

    def warm_up(self) -> None:
        size = self.input_size
        self.interpreter.invoke_heads(np.zeros((1, size, size, 3), dtype=np.float32))

    def run_heads(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(category probabilities, tag probabilities) of the first image of ``batch``."""
        outputs = self.interpreter.invoke_heads(batch[:1])
        return outputs[CATEGORY_HEAD][0], outputs[TAGS_HEAD][0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.run_heads(batch)[0]
