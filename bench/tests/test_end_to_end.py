"""bench.end_to_end: endpoint keys, baselines, and the variants a checkout can serve."""

from __future__ import annotations

from pathlib import Path

from bench import end_to_end
from bench.mcp_http import ERA_2025, ERA_2026
from bench.system import CONFIG_DIR, render_config


def test_keys_and_the_baseline_of_every_tool_of_an_era() -> None:
    assert end_to_end.endpoint_key("toolbus", ERA_2026) == "toolbus-2026"
    assert end_to_end.endpoint_key("toolbus", ERA_2025, "calc") == "toolbus-calc-2025"
    assert end_to_end.endpoint_key("limit", ERA_2026) == "limit"
    assert end_to_end.baseline_key("2025") == end_to_end.baseline_key(ERA_2025) == "sdk-2025"


def test_the_short_testkit_is_served_and_measured_only_where_the_config_knows_it(tmp_path: Path) -> None:
    supported = end_to_end.short_calls_supported()
    keys = [e.key for e in end_to_end.toolbus_endpoints("http://x/mcp", {})]
    assert ("toolbus-kitshort-2026" in keys) is supported
    config = render_config(
        CONFIG_DIR / "system.toml",
        tmp_path / "system.toml",
        nats_url="nats://127.0.0.1:1",
        state_dir="/tmp/x",
        short_components=end_to_end.short_components(),
    ).read_text()
    assert ('name = "kitshort"' in config) is supported
    assert "$" not in config  # every placeholder filled, the short block's path included
