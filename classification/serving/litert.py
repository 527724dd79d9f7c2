"""The LiteRT runtime every model kind runs on: a thread-safe interpreter and the softmax.

It sits below both the engine (which serves the kinds) and the registry (which runs the same
interpreter to check a conversion against TensorFlow), so neither has to import the other.
"""

import threading

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class LiteRTClassifier:
    """A LiteRT interpreter for one flat buffer, safe to call from many threads."""

    def __init__(self, *, model_content: bytes, num_threads: int) -> None:
        self._interpreter = Interpreter(model_content=model_content, num_threads=num_threads)
        self._interpreter.allocate_tensors()
        (input_details,) = self._interpreter.get_input_details()
        (output_details,) = self._interpreter.get_output_details()
        self._input_index = input_details["index"]
        self._output_index = output_details["index"]
        self.input_shape = tuple(int(d) for d in input_details["shape"])
        self.output_size = int(output_details["shape"][-1])
        self._lock = threading.Lock()

    def invoke(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs for a batch of exactly one preprocessed image."""
        with self._lock:
            self._interpreter.set_tensor(self._input_index, batch)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output_index).copy()
