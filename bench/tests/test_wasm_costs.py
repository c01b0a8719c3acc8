"""bench.wasm_costs: every tool kind measured step by step with real wasmtime, a few samples each."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import report, wasm_costs
from harness import apt
from harness.errors import AptError

SMALL_TOOLS = frozenset({"kit", "wordcount", "echo"})
"""Everything but calc: a componentize-py build and cold compile take seconds, and calc goes
through the same component steps as kit."""


def test_each_kind_is_measured_step_by_step_and_reported(tmp_path: Path) -> None:
    measured = wasm_costs.measure_in_process(1, 2, tmp_path, only=SMALL_TOOLS)
    # The C row is skipped only when clang and wasi-libc cannot be installed; then it says why.
    skipped = {s["tool"]: s["reason"] for s in measured["skipped"]}
    assert all(skipped.values())
    tools = {t["tool"]: t for t in measured["tools"]}
    assert set(tools) | set(skipped) == SMALL_TOOLS
    assert {(t["kind"], t["language"]) for t in tools.values()} >= {("component", "WAT"), ("command", "WAT")}
    for tool in tools.values():
        for key in ("cold_compile_ms", "cached_load_ms", "load_ms", "fresh_instance_ms", "first_call_ms", "call_ms"):
            assert tool[key]["n"] >= 3 and tool[key]["p50"] > 0, (tool["tool"], key)
        # Only a component's instance can run again; a command's _start runs once per instance.
        assert ("warm_call_ms" in tool) == (tool["kind"] == "component")
        # The whole call on a reused instance (reuse_instances) is reported apart from the fresh one.
        assert ("reused_call_ms" in tool) == (tool["kind"] == "component")
    if "wordcount" in tools:
        assert tools["wordcount"]["build"]["cached"] is False  # a fresh cache directory

    section = "\n".join(report._wasm_section({"wasm": measured}))
    for name, tool in tools.items():
        assert f"| {name} ({tool['language']}) | {tool['kind']} |" in section
    assert "wordcount came built in" in section or "wordcount (command, C) was not measured" in section


def test_a_missing_c_toolchain_skips_the_c_row_and_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_apt(binary: str, packages: tuple[str, ...]) -> str:
        raise AptError(f"{binary} is missing and apt-get is not here")

    monkeypatch.setattr(apt, "ensure_binary", no_apt)
    measured = wasm_costs.measure_in_process(1, 1, tmp_path, only=frozenset({"wordcount"}))
    assert measured["tools"] == []
    [skipped] = measured["skipped"]
    assert skipped["kind"] == "command" and skipped["language"] == "C"
    assert "clang-19 is missing" in skipped["reason"]
    section = "\n".join(report._wasm_section({"wasm": measured}))
    assert "**wordcount (command, C) was not measured**: clang-19 is missing" in section
