"""Toolchains installed on first use: Debian packages (clang and wasi-libc, npm) with apt-get, and
npm packages (componentize-js) into the cache, one directory per package and version.

``toolbus build`` and a worker building a ``source`` project call these, so a new user never
installs a toolchain by hand; the tests and the bench install through the same code
(``harness.apt``). Installing Debian packages needs root and a reachable mirror; without them
the error says which packages to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import structlog

from workers.toolchains.errors import BuildError

log = structlog.get_logger(__name__)

APT_TIMEOUT_S: Final = 600
"""Upper bound of one apt-get run (an update plus clang and wasi-libc take ~15 s on a warm mirror)."""
NPM_TIMEOUT_S: Final = 600
"""Upper bound of one npm install (componentize-js: ~25 s, ~390 MB, on this machine)."""


def debian_binary(binary: str, packages: Sequence[str], *, timeout_s: float = APT_TIMEOUT_S) -> str:
    """Path of ``binary``; installs ``packages`` with apt-get when it is not on PATH.

    Tries ``apt-get install`` first, then ``apt-get update`` and the install again (a fresh
    machine has no package lists, an old one stale ones).

    Raises:
        BuildError: ``binary`` is still missing afterwards; the message names the packages and
            carries apt-get's last error.
    """
    found = shutil.which(binary)
    if found:
        return found
    log.info("installing a toolchain with apt-get", binary=binary, packages=list(packages))
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
    raise BuildError(
        f"{binary} is missing and `apt-get install {' '.join(packages)}` did not bring it "
        f"(are you root, and online?): {last_error[-500:] or 'no error output'}"
    )


def npm_package(cache_dir: Path, package: str, version: str, binary: str) -> Path:
    """Path of ``binary`` from the npm ``package@version`` installed under ``cache_dir``/npm.

    Installed with npm (itself from Debian when missing) the first time, into a staging
    directory renamed into place once complete, so an interrupted install is never taken for one.

    Raises:
        BuildError: npm is missing and cannot be installed, or the install failed.
    """
    target = cache_dir / "npm" / f"{package.replace('/', '+')}-{version}"
    installed = target / "node_modules" / ".bin" / binary
    if installed.is_file():
        return installed
    npm = debian_binary("npm", ["npm"])
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (staging / "package.json").write_text('{"private": true}\n', encoding="utf-8")
        log.info("installing a toolchain with npm", package=package, version=version)
        argv = [npm, "install", "--save-exact", "--no-audit", "--no-fund", f"{package}@{version}"]
        env = {**os.environ, "npm_config_update_notifier": "false"}
        try:
            done = subprocess.run(
                argv, cwd=staging, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, env=env, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BuildError(f"npm install {package}@{version} failed: {exc}") from exc
        if done.returncode != 0 or not (staging / "node_modules" / ".bin" / binary).is_file():
            raise BuildError(f"npm install {package}@{version} failed:\n{done.stderr.strip()[-2000:]}")
        if target.exists():  # an earlier install that lost its binary
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return installed
