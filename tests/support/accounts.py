"""Users, tokens and cache kinds for the accounts tests."""

import os

from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

PASSWORD = "a long pass phrase for tests 7"

REDIS_URL = os.environ.get("REDIS_URL", "")
# The Redis variant runs wherever Redis is configured, and always in CI (where it must exist).
CACHE_KINDS = ["local-memory", "redis"] if REDIS_URL or os.environ.get("CI") else ["local-memory"]


def token_pair(user) -> dict[str, str]:
    refresh = RefreshToken.for_user(user)
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def bearer_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client
