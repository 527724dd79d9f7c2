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


class _Quantization:
    """How an integer tensor maps to real values: real = (integer - zero_point) * scale."""

    def __init__(self, details: dict) -> None:
        self.dtype = np.dtype(details["dtype"])
        scale, zero_point = details["quantization"]
        self.integer = np.issubdtype(self.dtype, np.integer) and scale != 0.0
        self.scale = np.float32(scale)
        self.zero_point = np.float32(zero_point)
        if self.integer:
            info = np.iinfo(self.dtype)
            self.low, self.high = np.float32(info.min), np.float32(info.max)

    def quantize(self, values: np.ndarray) -> np.ndarray:
        if not self.integer:
            return values
        integers = np.rint(values / self.scale + self.zero_point)
        return np.clip(integers, self.low, self.high).astype(self.dtype)

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        if not self.integer:
            return values
        return (values.astype(np.float32) - self.zero_point) * self.scale


class LiteRTClassifier:
    """A LiteRT interpreter for one flat buffer, safe to call from many threads.

    Callers give and get float32 whatever the model's own tensors are: an integer-quantized
    (int8) model's input is quantized and its output dequantized here, with the scale and zero
    point the converter recorded, so the preprocessing contract stays the float one.
    """

    def __init__(self, *, model_content: bytes, num_threads: int) -> None:
        self._interpreter = Interpreter(model_content=model_content, num_threads=num_threads)
        self._interpreter.allocate_tensors()
        (input_details,) = self._interpreter.get_input_details()
        (output_details,) = self._interpreter.get_output_details()
        self._input_index = input_details["index"]
        self._output_index = output_details["index"]
        self._input = _Quantization(input_details)
        self._output = _Quantization(output_details)
        self.input_shape = tuple(int(d) for d in input_details["shape"])
        self.output_size = int(output_details["shape"][-1])
        self._lock = threading.Lock()

    @property
    def quantized(self) -> bool:
        """Whether the model takes and gives integers (a full-integer quantized model)."""
        return self._input.integer or self._output.integer

    def invoke(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs (dequantized to float32) for a batch of exactly one preprocessed image."""
        inputs = self._input.quantize(batch)
        with self._lock:
            self._interpreter.set_tensor(self._input_index, inputs)
            self._interpreter.invoke()
            outputs = self._interpreter.get_tensor(self._output_index).copy()
        return self._output.dequantize(outputs)
