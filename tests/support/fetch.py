"""What the image_url tests need: a tripwire on the network and a loopback image server.

The tripwire replaces ``socket.getaddrinfo`` and ``socket.socket.connect``: test host names
(``*.test``) resolve to the addresses a test chose, and any lookup of another name or any
connection to an address outside loopback is recorded and stopped before a packet leaves. A
broken address filter then fails a test instead of reaching a private network.
"""

import builtins
import contextlib
import gzip
import http.server
import ipaddress
import socket
import socketserver
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class TripwireTripped(Exception):
    """The code under test tried to reach something other than loopback."""


@dataclass
class Tripwire:
    # name -> addresses, or an exception class to raise (e.g. socket.gaierror for NXDOMAIN),
    # or a function of the lookup count returning addresses (DNS rebinding).
    names: dict[str, object] = field(default_factory=dict)
    lookups: Counter = field(default_factory=Counter)
    connections: list[tuple[str, int]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def resolve(self, name: str, *addresses: str) -> None:
        self.names[name.lower()] = list(addresses)

    def _trip(self, message: str) -> TripwireTripped:
        self.violations.append(message)
        return TripwireTripped(message)

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else host
        if name is None:
            raise self._trip("getaddrinfo(None)")
        port_number = int(port or 0)
        try:
            ipaddress.ip_address(name.split("%", 1)[0])
            addresses: object = [name]
        except ValueError:
            self.lookups[name.lower()] += 1
            if name.lower() == "localhost":
                addresses = ["127.0.0.1"]
            elif name.lower() in self.names:
                addresses = self.names[name.lower()]
            else:
                raise self._trip(f"DNS lookup of {name!r}, a name no test set up") from None
        if isinstance(addresses, builtins.type) and issubclass(addresses, BaseException):
            raise addresses(socket.EAI_NONAME, "Name or service not known")
        if callable(addresses):
            addresses = addresses(self.lookups[name.lower()])
        results = []
        for address in addresses:  # type: ignore[attr-defined]
            ip = ipaddress.ip_address(address)
            if ip.version == 4:
                results.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port_number)))
            else:
                sockaddr = (address, port_number, 0, 0)
                results.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", sockaddr))
        return results

    def guard(self, real_connect: Callable) -> Callable:
        tripwire = self

        def connect(sock: socket.socket, address):  # type: ignore[no-untyped-def]
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                host, port = address[0], address[1]
                ip = ipaddress.ip_address(host.split("%", 1)[0])
                if not any(ip.version == net.version and ip in net for net in _LOOPBACK):
                    raise tripwire._trip(f"connection to {host} port {port}")
                tripwire.connections.append((host, port))
            return real_connect(sock, address)

        return connect


# --- The loopback server --------------------------------------------------------------------


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: bool = True  # False: chunked transfer encoding
    drip_interval: float | None = None  # send the body one byte at a time
    hang: bool = False  # accept the request and never answer
    delay: float = 0.0  # seconds before the answer starts (a slow image server)


@dataclass
class Seen:
    path: str
    host: str
    headers: dict[str, str]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        owner.requests.append(
            Seen(path=path, host=self.headers.get("Host", ""), headers=dict(self.headers.items()))
        )
        route = owner.routes.get(path, Route(status=404, body=b"not found"))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self._answer(route, owner.stopping)
        self.close_connection = True

    def _answer(self, route: Route, stopping: threading.Event) -> None:
        if route.hang:
            stopping.wait(60)
            return
        if route.delay and stopping.wait(route.delay):
            return
        self.send_response(route.status)
        for name, value in route.headers.items():
            self.send_header(name, value)
        if route.content_length:
            self.send_header("Content-Length", str(len(route.body)))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        if route.drip_interval is not None:
            for index in range(len(route.body)):
                if stopping.wait(route.drip_interval):
                    return
                self.wfile.write(route.body[index : index + 1])
                self.wfile.flush()
        elif route.content_length:
            self.wfile.write(route.body)
        else:
            for start in range(0, len(route.body), 16 * 1024):
                piece = route.body[start : start + 16 * 1024]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: "LoopbackServer"

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks the resolver for our name; loopback needs none.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        return None  # failed TLS handshakes are part of some tests


class LoopbackServer:
    """A threaded HTTP(S) server on 127.0.0.1 with routes the tests declare, counting requests."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Seen] = []
        self.stopping = threading.Event()
        self.server_names: list[str | None] = []  # TLS SNI seen
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        if tls is not None:
            tls.sni_callback = self._record_sni
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def _record_sni(self, ssl_socket, server_name, context) -> None:  # type: ignore[no-untyped-def]
        self.server_names.append(server_name)

    def route(self, path: str, **options: object) -> str:
        self.routes[path] = Route(**options)  # type: ignore[arg-type]
        return path

    def hits(self, path: str) -> int:
        return sum(1 for seen in self.requests if seen.path == path)

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()


def gzip_bomb(decoded_size: int) -> bytes:
    """A gzip body of ``decoded_size`` zero bytes (about a thousandth of that on the wire)."""
    return gzip.compress(b"\x00" * decoded_size, compresslevel=9)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
