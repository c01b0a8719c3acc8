"""A nats-server secured with the generated per-role users, for the bus's permission tests."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nats

from bus.connection import caught_up, inbox_prefix
from bus.embedded import free_port, nats_server_binary
from bus.security import new_passwords, server_config
from bus.subjects import Subjects
from schemas.config import NatsSettings

API_TIMEOUT_S = 2.0
"""A JetStream API request the server refuses gets no reply; this is how long to wait for none."""


@dataclass
class SecureServer:
    url: str
    passwords: dict[str, str]
    subjects: Subjects

    def as_role(self, role: str) -> NatsSettings:
        return NatsSettings(url=self.url, prefix=self.subjects.prefix, user=role, password=self.passwords[role])


@contextmanager
def secure_nats(directory: Path, subjects: Subjects) -> Iterator[SecureServer]:
    """A nats-server under ``directory`` whose users and permissions are generated for ``subjects``."""
    port = free_port()
    passwords = new_passwords()
    config = directory / "nats.conf"
    config.write_text(server_config(subjects, passwords, store_dir=directory / "js", port=port))
    process = launch(config, port)
    try:
        yield SecureServer(f"nats://127.0.0.1:{port}", passwords, subjects)
    finally:
        stop(process)


def launch(config: Path, port: int, *arguments: str) -> subprocess.Popen[bytes]:
    """nats-server with ``config``, once it accepts connections on ``port``; it logs to a file
    beside ``config``.

    A file, not a pipe: every refused probe is a log line, and a server whose pipe nobody reads
    stops in the middle of a test once the pipe is full (seen: a role's probes timed out).
    """
    log_path = config.with_name(f"{config.stem}-{port}.log")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(nats_server_binary()), "-c", str(config), *arguments], stdout=log_file, stderr=log_file
        )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            assert process.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "the secured nats-server did not start"
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)


async def permission_errors(
    secure_server: SecureServer, role: str, publish: list[str], subscribe: list[str]
) -> list[str]:
    """The permission errors the server reports when ``role`` publishes to every subject of
    ``publish`` and subscribes on every one of ``subscribe``."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(
        secure_server.url,
        user=role,
        password=secure_server.passwords[role],
        inbox_prefix=inbox_prefix(role),
        error_cb=on_error,
        allow_reconnect=False,
    )
    try:
        for subject in publish:
            await nc.publish(subject, b"{}")  # an API request without a reply subject: nothing happens
        for subject in subscribe:
            await nc.subscribe(subject)
        await caught_up(nc)  # the server has handled the commands, and each -ERR came before the echo
    finally:
        await nc.close()
    return [e for e in errors if "ermissions" in e]
