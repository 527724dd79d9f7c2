import json
import urllib.error
import urllib.request
import uuid

import pytest
from django_redis import get_redis_connection

from tests.support.accounts import CACHE_KINDS, REDIS_URL


def post_empty_classify(url: str) -> int:
    """One request on a new connection; throttling runs before the body is read, so an
    invalid body (400) still counts."""
    request = urllib.request.Request(
        f"{url}/classify-image",
        data=json.dumps({}).encode(),
        headers={"Content-Type": "application/json", "Connection": "close"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


if "redis" in CACHE_KINDS:  # wherever Redis is configured, and always in CI

    @pytest.mark.slow
    def test_the_limit_holds_across_server_processes_sharing_redis(web_server):
        if not REDIS_URL:
            pytest.fail("CI is set but REDIS_URL is not: this test must run in CI.")
        prefix = f"test-workers-{uuid.uuid4().hex}"
        env = {"REDIS_URL": REDIS_URL, "CACHE_KEY_PREFIX": prefix, "THROTTLE_ANON_RATE": "3/minute"}
        # Two one-worker servers, called in turn: with a per-process cache each would allow 3.
        servers = [web_server(workers=1, env=env) for _ in range(2)]
        try:
            statuses = [post_empty_classify(servers[i % 2].url) for i in range(8)]
        finally:
            redis = get_redis_connection("default")
            for key in redis.scan_iter(f"{prefix}:*"):
                redis.delete(key)

        assert statuses == [400] * 3 + [429] * 5
