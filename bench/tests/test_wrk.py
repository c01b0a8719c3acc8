"""bench.wrk: reading wrk's result line, and post.lua's response checks against a real wrk."""

from __future__ import annotations

import shutil

import pytest

from bench import wrk
from bench.tests.conftest import WrkHandler

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


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_post_lua_counts_bad_statuses_and_bodies(server: str) -> None:
    binary = shutil.which("wrk")
    assert binary is not None
    WrkHandler.seen, WrkHandler.ids = 0, []
    good = wrk.run(binary, wrk.Load(server, {"X-Test": "1"}, '{"id":{id}}', '"text":"5"'), 1, 1)
    assert good["requests"] > 10
    assert good["non_200"] == good["requests"] // 10
    assert good["bad_body"] == 0
    assert len(set(WrkHandler.ids)) == len(WrkHandler.ids), "every request has its own id"

    wrong = wrk.run(binary, wrk.Load(server, {}, '{"id":{id}}', '"text":"6"'), 1, 1)
    assert wrong["bad_body"] + wrong["non_200"] == wrong["requests"]
