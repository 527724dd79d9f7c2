"""The load test's naive peer: Flask and Keras ``model.predict``, as tutorials serve it.

It loads the same Keras file our registry converted for LiteRT, decodes and resizes with
Pillow, and answers the top 3 labels. One process, Flask's threaded development server, no
cache: the deployment a tutorial ends with, measured beside ours under the same load.
Run: python -m bench.naive_peer MODEL.keras LABELS.json PORT INPUT_SIZE LOW HIGH
"""

import io
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from flask import Flask, jsonify, request
from PIL import Image


def main() -> None:
    import keras  # here: after TF_CPP_MIN_LOG_LEVEL above, and only when the peer runs

    model_path, labels_path, port, size, low, high = sys.argv[1:7]
    model = keras.models.load_model(model_path, compile=False)
    labels = json.loads(open(labels_path).read())  # noqa: SIM115 - a tutorial's style, on purpose
    size_px, low_f, high_f = int(size), float(low), float(high)
    app = Flask(__name__)

    @app.get("/health")
    def health():
        return "ok"

    @app.post("/classify-image")
    def classify():
        started = time.perf_counter()
        image = Image.open(io.BytesIO(request.files["image"].read())).convert("RGB")
        pixels = np.asarray(image.resize((size_px, size_px)), dtype=np.float32)
        batch = (pixels / 255.0 * (high_f - low_f) + low_f)[np.newaxis]
        probabilities = model.predict(batch, verbose=0)[0]
        best = np.argsort(probabilities)[::-1][:3]
        return jsonify(
            {
                "predictions": [
                    {"label": labels[i], "confidence": float(probabilities[i])} for i in best
                ],
                "processing_time": time.perf_counter() - started,
            }
        )

    app.run(host="127.0.0.1", port=int(port), threaded=True)


if __name__ == "__main__":
    main()
