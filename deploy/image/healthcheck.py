"""The image's HEALTHCHECK: `classifier-healthcheck` (liveness) or `classifier-healthcheck ready`.

Asks the web server on 127.0.0.1:$PORT with Host: localhost (keep localhost in ALLOWED_HOSTS) and
X-Forwarded-Proto: https (so PRODUCTION's HTTPS redirect, where SECURE_PROXY_SSL_HEADER=1, lets
the request through), following no redirect. Live: any answer below 500 (the process answers).
Ready: /health/ready answers 200 (a model is loaded and the database answers).
"""

import http.client
import os
import sys


def main() -> int:
    ready = sys.argv[1:] == ["ready"]
    connection = http.client.HTTPConnection("127.0.0.1", int(os.environ.get("PORT", "8000")), 3)
    try:
        connection.request(
            "GET",
            "/health/ready" if ready else "/health/live",
            headers={"Host": "localhost", "X-Forwarded-Proto": "https"},
        )
        status = connection.getresponse().status
    except OSError as exc:
        print(f"unhealthy: {exc}")
        return 1
    healthy = status == 200 if ready else status < 500
    print(f"{'healthy' if healthy else 'unhealthy'}: HTTP {status}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
