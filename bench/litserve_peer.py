"""The load test's LitServe peer: a LitAPI serving the same LiteRT file as ours.

Written as a LitServe user writes it: ``setup`` loads the model (peer_model.py: Pillow, NumPy,
one LiteRT interpreter per inference worker process under a lock), ``decode_request`` reads
the upload and preprocesses it, ``predict`` invokes, ``encode_response`` answers the top 3
labels. No cache, no batching. The load test runs it on accelerator "cpu" with as many inference
workers (``workers_per_device``) and LiteRT threads as our service has; LitServe adds its own
processes (one API server per worker by default, and a queue manager), all of them measured.
Run: PEER_CONFIG=peer.json python -m bench.litserve_peer PORT WORKERS
"""

import sys

import litserve as ls
import numpy as np

from bench.peer_model import PeerModel


class ClassifierAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = PeerModel.load()

    # No annotation on request: LitServe then hands over the parsed form (a typed one would be
    # read as a JSON body).
    def decode_request(self, request) -> np.ndarray:
        return self.model.preprocess(request["image"].file.read())

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x)

    def encode_response(self, output: np.ndarray) -> dict:
        return self.model.top3(output)


def main() -> None:
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    server = ls.LitServer(
        ClassifierAPI(api_path="/classify-image"),
        accelerator="cpu",
        workers_per_device=workers,
        timeout=60,
    )
    server.run(
        host="127.0.0.1",
        port=port,
        generate_client_file=False,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
