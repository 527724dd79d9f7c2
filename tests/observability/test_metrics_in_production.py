"""/metrics of the real server with PRODUCTION=1: the token is the only key, even for a client
connecting from a network METRICS_ALLOWED_CIDRS names (an ingress controller's, loopback)."""

import secrets
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def status_of(url: str, **headers: str) -> int:
    request = urllib.request.Request(url, headers={"Host": "localhost", **headers})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_production_asks_every_address_for_the_metrics_token(web_server, tiny_model):
    token = secrets.token_urlsafe(32)
    server = web_server(
        workers=1,
        env={
            "PRODUCTION": "1",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "JWT_SIGNING_KEY": secrets.token_urlsafe(50),
            "SECURE_SSL_REDIRECT": "0",  # plain HTTP on loopback, no TLS proxy in front
            "METRICS_ALLOWED_CIDRS": "127.0.0.0/8",  # the client's network: not enough
            "METRICS_TOKEN": token,
        },
    )
    metrics = f"{server.url}/metrics"

    assert status_of(f"{server.url}/health/live") == 200
    assert status_of(metrics) == 401
    assert status_of(metrics, **{"X-Forwarded-For": "127.0.0.1"}) == 401
    assert status_of(metrics, Authorization="Bearer wrong") == 401
    assert status_of(metrics, Authorization=f"Bearer {token}") == 200
