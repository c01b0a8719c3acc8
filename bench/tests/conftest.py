"""Fixtures the bench tests share: a local HTTP server for runs of the real wrk (the nats-server is
the repository's conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest


class WrkHandler(BaseHTTPRequestHandler):
    """Answers every POST: 200 with the request's id echoed, or 500 for every 10th request."""

    seen = 0
    ids: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        WrkHandler.seen += 1
        WrkHandler.ids.append(body)
        status = 500 if WrkHandler.seen % 10 == 0 else 200
        reply = b'{"result":{"content":[{"type":"text","text":"5"}]}}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    """The URL of a ``WrkHandler`` server on a free port, stopped after the test."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), WrkHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/mcp"
    httpd.shutdown()
    httpd.server_close()
