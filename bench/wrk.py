"""wrk, the HTTP load generator of every HTTP target: installing it, running it, reading its result.

One wrk thread for every target and connection count: the machine has two cores and the
server under test needs them. ``post.lua`` gives each request a fresh JSON-RPC id, checks each
response (HTTP 200 and the expected text in the body) and prints one JSON line at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from harness import apt
from harness.errors import AptError

SCRIPT: Final = Path(__file__).resolve().parent / "post.lua"
RESULT_MARK: Final = "BENCH_RESULT "
THREADS: Final = 1
TIMEOUT_S: Final = 5
"""wrk's per-request timeout; a slower response counts as a timeout error."""


class WrkError(RuntimeError):
    """Raised when wrk is missing and cannot be installed, or a run produced no result."""


def ensure_wrk() -> str:
    """Path of wrk; installs Debian's package (``apt-get install -y wrk``) when it is missing.

    Raises:
        WrkError: wrk is not installed and apt-get could not install it.
    """
    try:
        return apt.ensure_binary("wrk", ("wrk",), timeout_s=300)
    except AptError as exc:
        raise WrkError(
            f"wrk is required for the HTTP benchmarks: {exc}. Install it yourself (Debian/Ubuntu: "
            "apt-get install wrk; macOS: brew install wrk), or leave the HTTP sections out: "
            "--only bus,wasm,restart,scaling"
        ) from exc


def version(binary: str) -> str:
    """wrk's version line (wrk prints it on stdout with the usage, exit status 1)."""
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0].split(" Copyright")[0].strip() if text else "unknown"


@dataclass(frozen=True)
class Load:
    """What to send: the URL, the headers, a body template with ``{id}`` and the text a good reply holds."""

    url: str
    headers: dict[str, str]
    body: str
    expect: str
    delay_ms: int = 0
    """Each connection waits this long after a response before its next request (0: none).
    A paced load (``bench.soak``) sets it; a load at full speed leaves it at 0, so wrk never
    sees a ``delay()`` in the script and keeps its fast path."""


def run(binary: str, load: Load, connections: int, duration_s: float) -> dict[str, Any]:
    """One wrk run; returns requests, calls/s, latency percentiles (µs) and error counts.

    Raises:
        WrkError: wrk exited without printing a result.
    """
    env = {
        **os.environ,
        "BENCH_BODY": load.body,
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in load.headers.items()),
        "BENCH_EXPECT": load.expect,
    }
    if load.delay_ms > 0:
        env["BENCH_DELAY_MS"] = str(load.delay_ms)
    argv = [binary, f"-t{THREADS}", f"-c{connections}", f"-d{max(1, round(duration_s))}s"]
    argv += [f"--timeout={TIMEOUT_S}s", "-s", str(SCRIPT), load.url]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    return parse_output(done.stdout, done.stderr)


def parse_output(stdout: str, stderr: str = "") -> dict[str, Any]:
    """The numbers of one run from wrk's output (the ``BENCH_RESULT`` line ``post.lua`` prints).

    Raises:
        WrkError: there is no such line.
    """
    line = next((ln for ln in stdout.splitlines() if ln.startswith(RESULT_MARK)), None)
    if line is None:
        raise WrkError(f"wrk printed no result:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    raw = json.loads(line[len(RESULT_MARK) :])
    duration_s = raw["duration_us"] / 1e6
    socket_errors = sum(raw["socket_errors"].values())
    latency = raw["latency_us"]
    return {
        "requests": raw["requests"],
        "duration_s": round(duration_s, 3),
        "rps": raw["requests"] / duration_s if duration_s else 0.0,
        "p50_ms": latency["p50"] / 1000,
        "p90_ms": latency["p90"] / 1000,
        "p99_ms": latency["p99"] / 1000,
        "mean_ms": latency["mean"] / 1000,
        "max_ms": latency["max"] / 1000,
        "errors": raw["non_200"] + raw["bad_body"] + socket_errors,
        "non_200": raw["non_200"],
        "bad_body": raw["bad_body"],
        "socket_errors": raw["socket_errors"],
    }
