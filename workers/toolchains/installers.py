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

from workers.cache_lock import building
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
    # Wait for another apt-get or dpkg (a second build, an unattended upgrade) rather than fail at once.
    wait = ["-o", f"DPkg::Lock::Timeout={int(timeout_s)}"]
    install = ["apt-get", *wait, "install", "-y", "-q", "--no-install-recommends", *packages]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    last_error = ""
    for argv in (install, ["apt-get", *wait, "update", "-q"], install):
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


INSTALLED_MARKER: Final = "installed"
"""Written last into an npm install directory: its presence means the install completed."""


def npm_install(cache_dir: Path, name: str, packages: Sequence[str], *, ignore_scripts: bool = False) -> Path:
    """``cache_dir``/npm/``name``, holding ``packages`` (``pkg@version`` each) installed with npm.

    Installed the first time only, by npm (itself from Debian when missing), into a staging
    directory renamed into place once complete, so an interrupted install is never taken for one.

    Raises:
        BuildError: npm is missing and cannot be installed, or the install failed.
    """
    target = cache_dir / "npm" / name
    # One install per machine: a second worker's would find the first's complete and remove it
    # under its feet (workers.cache_lock).
    with building(target):
        if (target / INSTALLED_MARKER).is_file():
            return target
        npm = debian_binary("npm", ["npm"])
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            (staging / "package.json").write_text('{"private": true}\n', encoding="utf-8")
            log.info("installing with npm", packages=list(packages))
            argv = [npm, "install", "--save-exact", "--no-audit", "--no-fund", *packages]
            if ignore_scripts:
                argv.append("--ignore-scripts")
            env = {**os.environ, "npm_config_update_notifier": "false"}
            try:
                done = subprocess.run(
                    argv, cwd=staging, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, env=env, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise BuildError(f"npm install {' '.join(packages)} failed: {exc}") from exc
            if done.returncode != 0:
                raise BuildError(f"npm install {' '.join(packages)} failed:\n{done.stderr.strip()[-2000:]}")
            (staging / INSTALLED_MARKER).write_text(" ".join(packages) + "\n", encoding="utf-8")
            if target.exists():  # an install that died before its marker, or a pruned cache
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return target
