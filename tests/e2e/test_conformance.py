"""The official MCP conformance suite against ``toolbus up``, with a baseline of unoffered features.

``conformance server --suite all`` runs every server scenario of the pinned suite (the default
"active" suite leaves out the two pending ones, json-schema-2020-12 and server-sse-polling).
tests/e2e/conformance-baseline.yml lists the scenarios for features toolbus does not offer;
the suite exits 0 only when every other scenario passes and every listed one still fails.
docs/conformance.md says what each scenario checks.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.embedded import EmbeddedNatsServer, free_port
from tests.e2e.conftest import EXAMPLES, ConformanceCli, RunningSystem, start_up, stop_up

BASELINE = Path(__file__).with_name("conformance-baseline.yml")
CONFIG = EXAMPLES / "toolbus.toml"
"""What ``toolbus up`` serves by default; the conformance tools (test_simple_text, ...) belong in it."""
RUN_TIMEOUT_S = 300
"""The whole suite takes about a second against a ready system; each request has the SDK's 60 s."""


@pytest.fixture(scope="module")
def default_system(
    nats_server: EmbeddedNatsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSystem]:
    """``toolbus up`` serving its default configuration, on the session's nats-server and a free port."""
    directory = tmp_path_factory.mktemp("conformance-system")
    port = free_port()
    process, banner = start_up(CONFIG, "--nats", nats_server.url, "--port", str(port), log_path=directory / "up.log")
    yield RunningSystem(process, f"http://127.0.0.1:{port}/mcp", nats_server.url, CONFIG, banner)
    assert stop_up(process) == 0, (directory / "up.log").read_text()[-3000:]


def listed(output: str, mark: str) -> set[str]:
    """Scenario names the suite printed under one baseline heading (``✗`` unexpected, ``✓`` stale)."""
    return set(re.findall(rf"^  {mark} (\S+)$", output, flags=re.MULTILINE))


def failed_checks(results: Path) -> str:
    """One line per failed or warning check, from the suite's checks.json files."""
    lines = []
    for checks in sorted(results.glob("*/checks.json")):
        scenario = re.sub(r"^server-|-\d{4}-\d\d-\d\dT.*$", "", checks.parent.name)
        for check in json.loads(checks.read_text()):
            if check["status"] in ("FAILURE", "WARNING"):
                lines.append(f"{scenario}: {check['status']} {check['id']}: {check.get('errorMessage', '')}")
    return "\n".join(lines)


def run_suite(
    cli: ConformanceCli, system: RunningSystem, tmp_path: Path, *arguments: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """``conformance server`` against ``system`` (results under ``tmp_path/results``), and its output uncoloured."""
    done = subprocess.run(
        [*cli.argv, "server", "--url", system.mcp_url, *arguments, "--output-dir", str(tmp_path / "results")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    return done, re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)  # the suite colours its output unconditionally


NEXT_SCENARIOS = (
    "http-custom-header-server-validation",
    # Resources, prompts and completion from components (docs/resources-prompts.md): the
    # examples/conformance component serves what the reference server does.
    "resources-list",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "resources-subscribe",
    "resources-unsubscribe",
    "prompts-list",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
    "completion-complete",
    "sep-2164-resource-not-found",
    "caching",
)
"""Scenarios of the newest suite (``CONFORMANCE_NEXT_VERSION``) that must pass. The custom-header
one calls the first tool whose schema has an ``x-mcp-header`` property (``echo_region`` in
examples/toolbus.toml) with matching, mismatched, base64-mangled and missing ``Mcp-Param-Region``
headers: the gateway must hand such calls to the SDK's check (gateway.hotpath), never serve them."""


@pytest.mark.slow
@pytest.mark.parametrize("scenario", NEXT_SCENARIOS)
def test_the_newest_suite_s_header_scenarios_pass(
    conformance_next_cli: ConformanceCli, default_system: RunningSystem, tmp_path: Path, scenario: str
) -> None:
    done, stdout = run_suite(conformance_next_cli, default_system, tmp_path, "--scenario", scenario)
    report = f"exit {done.returncode}\n{stdout[-3000:]}\n{failed_checks(tmp_path / 'results')}"
    assert re.search(r"Passed: (\d+)/\1, 0 failed", stdout), report
    assert done.returncode == 0, report


@pytest.mark.slow
def test_the_official_conformance_suite_passes_but_for_unoffered_features(
    conformance_cli: ConformanceCli, default_system: RunningSystem, tmp_path: Path
) -> None:
    started = time.monotonic()
    done, stdout = run_suite(
        conformance_cli, default_system, tmp_path, "--suite", "all", "--expected-failures", str(BASELINE)
    )
    took_s = time.monotonic() - started
    summary = stdout[stdout.find("=== SUMMARY ===") :]
    report = f"exit {done.returncode} after {took_s:.1f} s\n{summary}\n{failed_checks(tmp_path / 'results')}"
    assert "=== SUMMARY ===" in stdout, f"the suite did not run:\n{stdout[-3000:]}\n{done.stderr[-3000:]}"

    stale = listed(stdout, "✓")
    assert not stale, f"baseline entries now pass; remove them from {BASELINE.name}: {sorted(stale)}\n{report}"
    unexpected = listed(stdout, "✗")
    assert not unexpected, f"scenarios failing that should pass: {sorted(unexpected)}\n{report}"
    assert done.returncode == 0, report
