"""The load test's FastAPI peer: FastAPI + uvicorn serving the same LiteRT file as ours.

Written as a FastAPI user writes it: one ``async def`` endpoint taking an ``UploadFile``, the
model work (peer_model.py: Pillow, NumPy, one LiteRT interpreter per worker process under a
lock) in Starlette's thread pool, the top 3 labels as JSON. No cache. The load test runs it
with as many uvicorn workers and LiteRT threads as our service has, access log off:
PEER_CONFIG=peer.json python -m uvicorn bench.fastapi_peer:app --workers N --no-access-log
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, File, UploadFile
from fastapi.concurrency import run_in_threadpool

from bench.peer_model import PeerModel

model: PeerModel | None = None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    global model  # one model per worker process, loaded before it takes requests
    model = PeerModel.load()
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> str:
    return "ok"


@app.post("/classify-image")
async def classify_image(image: UploadFile = File(...)) -> dict:  # noqa: B008 - FastAPI's idiom
    data = await image.read()
    assert model is not None  # set by the lifespan before any request
    return await run_in_threadpool(model.classify, data)
