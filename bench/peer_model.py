"""The model code of the load test's framework peers (fastapi_peer.py, litserve_peer.py).

What a user of either framework writes around a LiteRT file, with plain Pillow and NumPy and
nothing of this project: the image decoded in full, the version's recorded preprocessing
(central square of ``crop`` x the shorter side, resized with the recorded filter, pixels
scaled linearly to the recorded range), one interpreter per process called under a lock, and
the top 3 labels. The load test writes the registered version's facts to a JSON file named by
PEER_CONFIG: the .tflite path, labels, input size, preprocessing, outputs and LiteRT threads.
"""

import io
import json
import os
import threading
from dataclasses import dataclass

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image, ImageOps

RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass
class PeerModel:
    interpreter: Interpreter
    labels: list[str]
    input_size: int
    crop: float
    resample: Image.Resampling
    low: float
    high: float
    logits: bool
    lock: threading.Lock

    @classmethod
    def load(cls) -> "PeerModel":
        with open(os.environ["PEER_CONFIG"]) as file:
            config = json.load(file)
        preprocessing = config["preprocessing"]
        if preprocessing.get("resize") != "central_square" or "mean" in preprocessing:
            raise ValueError(f"The peers implement central_square only, not {preprocessing}")
        interpreter = Interpreter(model_path=config["model"], num_threads=config["threads"])
        interpreter.allocate_tensors()
        low, high = preprocessing["scale"]
        return cls(
            interpreter=interpreter,
            labels=config["labels"],
            input_size=config["input_size"],
            crop=float(preprocessing.get("crop", 1.0)),
            resample=RESAMPLING[preprocessing["resample"]],
            low=float(low),
            high=float(high),
            logits=config["outputs"] == "logits",
            lock=threading.Lock(),
        )

    def preprocess(self, data: bytes) -> np.ndarray:
        image: Image.Image = Image.open(io.BytesIO(data))
        image.load()  # the whole image: no JPEG draft
        ImageOps.exif_transpose(image, in_place=True)
        if image.mode != "RGB":  # as our service does: no copy of an image already RGB
            image = image.convert("RGB")
        width, height = image.size
        side = max(1, int(self.crop * min(width, height)))
        left, top = (width - side + 1) // 2, (height - side + 1) // 2
        square = image.crop((left, top, left + side, top + side))
        resized = square.resize((self.input_size, self.input_size), resample=self.resample)
        pixels = np.asarray(resized, dtype=np.float32)
        scaled = pixels / np.float32(255.0 / (self.high - self.low)) + np.float32(self.low)
        return scaled[np.newaxis]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            self.interpreter.set_tensor(self.interpreter.get_input_details()[0]["index"], batch)
            self.interpreter.invoke()
            output = self.interpreter.get_tensor(self.interpreter.get_output_details()[0]["index"])
            scores = output[0].copy()
        if self.logits:
            exp = np.exp(scores - scores.max())
            scores = exp / exp.sum()
        return scores

    def top3(self, scores: np.ndarray) -> dict:
        best = np.argsort(scores)[::-1][:3]
        return {
            "predictions": [{"label": self.labels[i], "confidence": float(scores[i])} for i in best]
        }

    def classify(self, data: bytes) -> dict:
        return self.top3(self.predict(self.preprocess(data)))
