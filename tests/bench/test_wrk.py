"""bench.wrk: reading wrk's result line, and post.lua's response checks against a real wrk."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from bench import wrk

LINE = (
    'BENCH_RESULT {"requests":1000,"responses":1000,"duration_us":2000000,"non_200":3,"bad_body":2,'
    '"socket_errors":{"connect":0,"read":1,"write":0,"timeout":0},'
    '"latency_us":{"mean":1500.5,"max":9000,"p50":1200,"p90":2500,"p99":8000}}'
)


def test_parse_output_reads_the_result_line() -> None:
    result = wrk.parse_output("Running 2s test @ http://x\n" + LINE + "\n")
    assert result["requests"] == 1000
    assert result["rps"] == 500.0
    assert (result["p50_ms"], result["p90_ms"], result["p99_ms"]) == (1.2, 2.5, 8.0)
    assert result["errors"] == 3 + 2 + 1
    assert (result["non_200"], result["bad_body"]) == (3, 2)


def test_parse_output_without_a_result_line_fails_loudly() -> None:
    with pytest.raises(wrk.WrkError, match="no result"):
        wrk.parse_output("unable to connect to 127.0.0.1:1 Connection refused", "")


class _Handler(BaseHTTPRequestHandler):
    """Answers every POST: 200 with the request's id echoed, or 500 for every 10th request."""

    seen = 0
    ids: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        _Handler.seen += 1
        _Handler.ids.append(body)
        status = 500 if _Handler.seen % 10 == 0 else 200
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
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/mcp"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_post_lua_counts_bad_statuses_and_bodies(server: str) -> None:
    binary = shutil.which("wrk")
    assert binary is not None
    _Handler.seen, _Handler.ids = 0, []
    good = wrk.run(binary, wrk.Load(server, {"X-Test": "1"}, '{"id":{id}}', '"text":"5"'), 1, 1)
    assert good["requests"] > 10
    assert good["non_200"] == good["requests"] // 10
    assert good["bad_body"] == 0
    assert len(set(_Handler.ids)) == len(_Handler.ids), "every request has its own id"

    wrong = wrk.run(binary, wrk.Load(server, {}, '{"id":{id}}', '"text":"6"'), 1, 1)
    assert wrong["bad_body"] + wrong["non_200"] == wrong["requests"]
