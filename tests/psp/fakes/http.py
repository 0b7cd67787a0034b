"""A small threaded HTTP server run in-process for the PSP fakes.

The adapters' real HTTP code runs against it (the braintree SDK over `requests`, httpx for
PayPal): a fake is an `App` that turns a `Request` into a `Response`. A response may carry a
`delay`: the fake has already done the work (recorded the sale) and answers late, which is
how a test makes the adapter time out after the PSP acted ("a lost answer").
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (after the work is done)


class App(Protocol):
    def handle(self, request: Request) -> Response: ...


def free_port() -> int:
    """A port nothing listens on (bound, then released): connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as the real APIs

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        self.server.requests.append(request)
        try:
            response = self.server.app.handle(request)
        except Exception as exc:  # a bug in a fake must show up, not hang the client
            response = Response(500, repr(exc).encode(), "text/plain")
        if response.delay:
            time.sleep(response.delay)
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting: exactly what a delayed answer is for

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: App) -> None:
        super().__init__((HOST, 0), _Handler)
        self.app = app
        self.requests: list[Request] = []


@contextmanager
def serving(app: App) -> Iterator[tuple[str, list[Request]]]:
    """Run `app` on 127.0.0.1 and a free port: yields (base URL, the requests it received)."""
    server = _Server(app)
    thread = threading.Thread(target=server.serve_forever, name="psp-fake", daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}", server.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
