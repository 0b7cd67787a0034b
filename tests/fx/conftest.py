"""An ECB stand-in: the daily and history XML over HTTP, for the fetch job's tests."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def ecb_server() -> Iterator[str]:
    """`http://127.0.0.1:PORT`: /eurofxref-daily.xml and /eurofxref-hist.xml, else 404."""
    files = {f"/{name}": (DATA / name).read_bytes()
             for name in ("eurofxref-daily.xml", "eurofxref-hist.xml")}  # fmt: skip

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path, b"")
            self.send_response(200 if self.path in files else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
