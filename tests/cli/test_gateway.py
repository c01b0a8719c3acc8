"""The ``toolbus gateway`` verb: flags, config errors, and a real run stopped by a signal."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import cli.gateway
from bus.embedded import EmbeddedNatsServer, free_port
from bus.subjects import Subjects
from cli.main import build_parser

START_TIMEOUT_S = 20.0

# Runs the verb the way cli.main does, without loading the other packages' verbs.
HARNESS = """
import argparse, sys
import cli.gateway
from cli.gateway import register
parser = argparse.ArgumentParser(prog="toolbus")
register(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
try:
    sys.exit(args.run(args))
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.fixture(autouse=True)
def keep_logging_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs must not point structlog at pytest's capture file (closed after the test)."""
    monkeypatch.setattr(cli.gateway, "configure_logging", lambda _format: None)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_flags_are_parsed() -> None:
    args = parse("gateway", "--nats", "nats://h:1", "--host", "0.0.0.0", "--port", "9000")
    assert (args.nats, args.host, args.port) == ("nats://h:1", "0.0.0.0", 9000)
    assert callable(args.run)


def test_a_config_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("gateway", "--config", str(tmp_path / "missing.toml"))
    assert args.run(args) == 2
    assert "missing.toml: file not found" in capsys.readouterr().err


def test_an_invalid_port_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("gateway", "--port", "70000")
    assert args.run(args) == 2
    assert "gateway.port" in capsys.readouterr().err


def test_unreachable_nats_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "toolbus.toml"
    config.write_text("[nats]\nconnect_timeout_s = 0.5\n")
    args = parse("gateway", "--config", str(config), "--nats", f"nats://127.0.0.1:{free_port()}", "--port", "0")
    started = time.monotonic()
    assert args.run(args) == 1
    assert time.monotonic() - started < 5
    assert "cannot reach NATS" in capsys.readouterr().err


def _health(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            body: dict[str, object] = json.loads(response.read())
            return body
    except (urllib.error.URLError, ConnectionError):
        return None


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)])
def test_the_gateway_serves_until_signalled(
    nats_server: EmbeddedNatsServer, subjects: Subjects, tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    config = tmp_path / "toolbus.toml"
    config.write_text(f'log_format = "json"\n[nats]\nprefix = "{subjects.prefix}"\n')
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HARNESS,
            "gateway",
            "--config",
            str(config),
            "--nats",
            nats_server.url,
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        health = None
        while health is None and time.monotonic() < deadline and process.poll() is None:
            health = _health(f"http://127.0.0.1:{port}/readyz")
            time.sleep(0.05)
        assert health == {"status": "ok", "nats": "connected", "catalogueLoaded": True, "tools": 0}
        process.send_signal(sig)
        _out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == status, err.decode()
    assert b"Traceback" not in err
