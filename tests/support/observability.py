"""Scraping /metrics, uploading an image and keeping JSON log lines, for the observability tests."""

import io
import json
import logging

from rest_framework.test import APIClient

from core.logs import JsonLineFormatter, RequestIdFilter
from tests.support.images import encode, noise_image
from tests.support.metrics import samples_sum

CLASSIFY = "classification:classify-image"


def scrape(client: APIClient | None = None, **extra: str) -> str:
    response = (client or APIClient()).get("/metrics", **extra)
    assert response.status_code == 200, response.content
    return response.content.decode()


def value(text: str, name: str, **labels: object) -> float:
    """A sample's value in the exposition text (summed over labels not given; 0 if absent)."""
    return samples_sum(text, name, labels)


def upload(client: APIClient, *, seed: int = 0, **extra: str):
    file = io.BytesIO(encode(noise_image(size=(32, 32), seed=seed), "PNG"))
    file.name = "photo.png"
    return client.post("/classify-image", {"image": file}, format="multipart", **extra)


class JsonLines(logging.Handler):
    """Formats records as the console handler does with LOG_FORMAT=json, and keeps the lines."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonLineFormatter())
        self.addFilter(RequestIdFilter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]

    def access(self) -> list[dict]:
        return [r for r in self.records() if r["logger"] == "core.access"]
