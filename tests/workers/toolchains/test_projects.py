"""Running a build tool: its output, its failures, and progress while it runs long."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from workers.toolchains import projects
from workers.toolchains.errors import BuildError
from workers.toolchains.projects import run_tool


def test_a_long_build_says_so_while_it_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(projects, "PROGRESS_EVERY_S", 0.2)
    with capture_logs() as logs:
        out = run_tool(
            [sys.executable, "-c", "import time; time.sleep(0.7); print('built')"],
            cwd=None,
            timeout_s=30,
            what="x",
            source=tmp_path,
        )
    assert out.strip() == "built"
    progress = [entry for entry in logs if entry["event"] == "still building"]
    assert len(progress) >= 2
    assert progress[0]["source"] == str(tmp_path)
    assert [entry["elapsed_s"] for entry in progress] == sorted(entry["elapsed_s"] for entry in progress)


def test_a_quick_tool_logs_nothing() -> None:
    with capture_logs() as logs:
        assert run_tool([sys.executable, "-c", "print(1)"], cwd=None, timeout_s=30, what="x").strip() == "1"
    assert logs == []


def test_a_failure_carries_the_tool_s_error_output() -> None:
    with pytest.raises(BuildError, match=r"^cannot:\nbroken here"):
        run_tool([sys.executable, "-c", "import sys; sys.exit('broken here')"], cwd=None, timeout_s=30, what="cannot")


def test_a_hang_is_stopped_at_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(projects, "PROGRESS_EVERY_S", 0.2)
    with pytest.raises(BuildError, match=r"timed out after 0\.5 s"):
        run_tool([sys.executable, "-c", "import time; time.sleep(30)"], cwd=None, timeout_s=0.5, what="hung")
