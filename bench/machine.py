"""What the figures were measured on: the machine, the software versions and the checkout."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.cpu import MachineMeter
from harness.processes import REPO

BACKGROUND_SAMPLE_S = 2.0
PACKAGES = ("wasmtime", "nats-py", "mcp", "uvicorn", "uvloop", "httptools", "starlette", "msgspec", "componentize-py")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _command(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout or done.stderr).rstrip() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def background_cores_busy(seconds: float = BACKGROUND_SAMPLE_S) -> float:
    """Cores busy on the machine over ``seconds`` while the bench itself does nothing."""
    meter = MachineMeter()
    meter.start()
    time.sleep(seconds)
    return meter.stop(seconds)


def describe(wrk_version: str | None) -> dict[str, Any]:
    """Machine, versions, git state and how busy the machine already is, for the JSON report."""
    from bus.embedded import nats_server_binary

    status = _command(["git", "status", "--porcelain"])
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "background_cores_busy": background_cores_busy(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            **{package: _version(package) for package in PACKAGES},
            "nats-server": _command([str(nats_server_binary()), "--version"]),
            "wrk": wrk_version or "not used",
        },
        "git": {
            "commit": _command(["git", "rev-parse", "HEAD"]),
            "uncommitted_changes": [line for line in status.splitlines() if line.strip()]
            if status != "unknown"
            else [],
        },
    }
