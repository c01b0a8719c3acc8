"""Debian packages the bench and the tests need (wrk, the C toolchain, docker-registry, npm),
installed with apt-get when missing, by the same installer ``toolbus build`` uses
(``workers.toolchains.installers``), so the test command works on a fresh machine."""

from __future__ import annotations

from collections.abc import Sequence

from harness.errors import AptError
from workers.toolchains.errors import BuildError
from workers.toolchains.installers import APT_TIMEOUT_S, debian_binary


def ensure_binary(binary: str, packages: Sequence[str], *, timeout_s: float = APT_TIMEOUT_S) -> str:
    """Path of ``binary``; installs ``packages`` with apt-get when it is not on PATH.

    Raises:
        AptError: ``binary`` is still missing afterwards; the message carries apt-get's last error.
    """
    try:
        return debian_binary(binary, packages, timeout_s=timeout_s)
    except BuildError as exc:
        raise AptError(str(exc)) from exc
