"""Loaded by a server the schema test starts (PYTHONPATH): no name resolves but loopback's.

schemathesis sends any image_url the schema allows; the service would resolve its host. Here
every other name fails to resolve, as an unknown host does, so the answer is the documented 422
and no traffic leaves the machine.
"""

import socket

_getaddrinfo = socket.getaddrinfo
_LOOPBACK = {None, "localhost", "127.0.0.1", "::1", b"localhost", b"127.0.0.1", b"::1"}


def _loopback_only(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    if host not in _LOOPBACK:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (offline test)")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_only
