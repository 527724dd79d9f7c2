import logging
from collections.abc import Iterator

import pytest

from tests.support.observability import JsonLines


@pytest.fixture
def json_log() -> Iterator[JsonLines]:
    handler = JsonLines()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)
