"""The image's HEALTHCHECK: `classifier-healthcheck` (liveness) or `classifier-healthcheck ready`;
`classifier-healthcheck sender` for the `sender` command (its own /health/live on
EXPORT_HEALTH_PORT, 8001).

Asks the web server on 127.0.0.1:$PORT the way a client's request arrives: with Host: localhost
(keep localhost in ALLOWED_HOSTS) and, only where the server trusts a TLS-terminating proxy
(SECURE_PROXY_SSL_HEADER=1), the proxy's X-Forwarded-Proto: https. It follows no redirect and
counts only a 200 as healthy: a server that answers every plain-HTTP client with a redirect to
an HTTPS port nobody serves (PRODUCTION=1 without a proxy) is reported unhealthy, not green.
Live: /health/live (the process answers). Ready: /health/ready (this pod can serve).
"""

import http.client
import os
import sys

TRUE = {"1", "true", "yes", "on"}


def main() -> int:
    mode = sys.argv[1] if sys.argv[1:] else "live"
    headers = {"Host": "localhost"}
    if os.environ.get("SECURE_PROXY_SSL_HEADER", "").strip().lower() in TRUE:
        headers["X-Forwarded-Proto"] = "https"
    port = os.environ.get("EXPORT_HEALTH_PORT", "8001") if mode == "sender" else None
    port = port or os.environ.get("PORT", "8000")
    connection = http.client.HTTPConnection("127.0.0.1", int(port), 3)
    try:
        connection.request(
            "GET", "/health/ready" if mode == "ready" else "/health/live", headers=headers
        )
        response = connection.getresponse()
    except OSError as exc:
        print(f"unhealthy: {exc}")
        return 1
    if response.status == 200:
        print("healthy: HTTP 200")
        return 0
    detail = ""
    if 300 <= response.status < 400:
        detail = (
            f" redirect to {response.getheader('Location')}: the server redirects plain HTTP"
            " (SECURE_SSL_REDIRECT, on with PRODUCTION=1); behind a TLS proxy set"
            " SECURE_PROXY_SSL_HEADER=1, without one SECURE_SSL_REDIRECT=0"
        )
    print(f"unhealthy: HTTP {response.status}{detail}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
