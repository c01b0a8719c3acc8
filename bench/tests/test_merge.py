"""bench.merge: a partial run replaces its own sections of an earlier report and says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import merge, report
from bench.plan import FULL, Plan


def _machine(date: str, commit: str, wasmtime: str = "50.0.1") -> dict[str, Any]:
    return {
        "date": date,
        "cpu_count": 2,
        "cpu_model": "test CPU",
        "python": "3.11.7",
        "background_cores_busy": 0.05,
        "versions": {"wasmtime": wasmtime, "nats-py": "2.16.0", "mcp": "2.3.0", "nats-server": "v2", "wrk": "wrk 4"},
        "git": {"commit": commit, "uncommitted_changes": []},
    }


def _run(sections: list[str], date: str, commit: str, **figures: Any) -> dict[str, Any]:
    return {
        "schema": 1,
        "command": "python bench/run.py" + (f" --only {','.join(sections)} --merge" if len(sections) < 3 else ""),
        "quick": False,
        "sections": sections,
        "plan": json.loads(json.dumps(FULL.as_dict())),  # as read back from performance.json
        "machine": _machine(date, commit),
        "duration_s": 60.0,
        "failures": {},
        **figures,
    }


def test_a_partial_run_replaces_only_its_sections_and_is_recorded() -> None:
    earlier = _run(
        ["http", "wasm", "scaling"],
        "2026-01-01",
        "a" * 40,
        http={"summary": []},
        profile={"toolbus-2026": {}},
        wasm={"tools": [], "old": True},
        scaling={"ratio_2_vs_1": 1.78},
    )
    earlier["targets"] = [{"stale": True}]
    merged = merge.merge(earlier, _run(["wasm"], "2026-02-02", "b" * 40, wasm={"tools": [], "skipped": []}))
    assert merged["wasm"] == {"tools": [], "skipped": []}
    assert merged["scaling"] == {"ratio_2_vs_1": 1.78} and merged["profile"] == {"toolbus-2026": {}}
    assert merged["machine"]["date"] == "2026-01-01"  # the header still describes the full run
    assert merged["sections"] == ["http", "wasm", "scaling"]
    assert "targets" not in merged  # evaluated again from the merged figures
    [update] = merged["updates"]
    assert update["sections"] == ["wasm"] and update["machine"]["git"]["commit"] == "b" * 40

    # An http run without its py-spy profile drops the earlier profile; the wasm update still stands.
    again = merge.merge(merged, _run(["http"], "2026-03-03", "c" * 40, http={"summary": []}))
    assert "profile" not in again
    assert [u["sections"] for u in again["updates"]] == [["wasm"], ["http"]]
    # Measuring wasm once more retires the first update.
    last = merge.merge(again, _run(["wasm"], "2026-04-04", "d" * 40, wasm={"tools": [], "skipped": []}))
    assert [u["machine"]["date"] for u in last["updates"]] == ["2026-03-03", "2026-04-04"]


def test_the_report_names_each_update_under_its_header() -> None:
    earlier = _run(["http", "wasm", "scaling"], "2026-01-01", "a" * 40)
    fresh = _run(["wasm"], "2026-02-02", "b" * 40, wasm={"tools": [], "skipped": []})
    fresh["machine"]["versions"]["wasmtime"] = "51.0.0"
    fresh["machine"]["background_cores_busy"] = 0.6
    merged = merge.merge(earlier, fresh)
    merged["targets"] = []
    text = report.markdown(merged, Plan.from_dict(merged["plan"]))
    assert (
        "Re-measured since: `wasm` by `python bench/run.py --only wasm --merge` on 2026-02-02, commit `bbbbbbbbbbbb`; "
        "versions that differ: wasmtime 51.0.0; 0.60 cores were busy with other work before it started." in text
    )


def test_the_plan_survives_json() -> None:
    assert Plan.from_dict(json.loads(json.dumps(FULL.as_dict()))) == FULL


def test_merging_needs_an_earlier_report(tmp_path: Path) -> None:
    with pytest.raises(merge.MergeError, match="needs an earlier report"):
        merge.previous(tmp_path)
