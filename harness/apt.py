"""Debian packages the bench and the tests need (wrk, the C toolchain, docker-registry, npm),
installed with apt-get when missing: the one installer, so the test command works on a fresh machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Final

from harness.errors import AptError

APT_TIMEOUT_S: Final = 600
"""Upper bound of one apt-get run (an update plus clang and wasi-libc take ~15 s on a warm mirror)."""


def ensure_binary(binary: str, packages: Sequence[str], *, timeout_s: float = APT_TIMEOUT_S) -> str:
    """Path of ``binary``; installs ``packages`` with apt-get when it is not on PATH.

    Tries ``apt-get install`` first, then ``apt-get update`` and the install again (a fresh
    machine has no package lists, an old one stale ones). Needs root and a reachable mirror.

    Raises:
        AptError: ``binary`` is still missing afterwards; the message carries apt-get's last error.
    """
    found = shutil.which(binary)
    if found:
        return found
    print(f"toolbus: {binary} not found; installing {' '.join(packages)} with apt-get", flush=True)
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    last_error = ""
    for argv in (install, ["apt-get", "update", "-q"], install):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            last_error = str(exc)
            break
        last_error = done.stderr.strip() or last_error
        found = shutil.which(binary)
        if found:
            return found
    raise AptError(
        f"{binary} is missing and `apt-get install {' '.join(packages)}` did not bring it "
        f"(are you root, and online?): {last_error[-500:] or 'no error output'}"
    )
