"""A source project as every toolchain sees it: its files, the content key of its build, its tools.

Both builders (``workers.toolchains.componentize`` and ``workers.toolchains.clang``) hash the
same project files into the same kind of key (``<cache_dir>/built/<key>.wasm``) and run their
compilers the same way, so those steps are written here once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import structlog

from workers.toolchains.errors import BuildError

log = structlog.get_logger(__name__)


def project_files(source_dir: Path) -> list[tuple[str, bytes]]:
    """Every file of the project in sorted relative-path order, without caches and dot-files.

    Raises:
        BuildError: ``source_dir`` is not a directory.
    """
    if not source_dir.is_dir():
        raise BuildError(f"source {source_dir} is not a directory")
    files: list[tuple[str, bytes]] = []
    for path in source_dir.rglob("*"):
        relative = path.relative_to(source_dir)
        if any(part == "__pycache__" or part.startswith(".") for part in relative.parts):
            continue
        if path.suffix == ".pyc" or not path.is_file():
            continue
        files.append((relative.as_posix(), path.read_bytes()))
    files.sort()
    return files


def content_key(files: list[tuple[str, bytes]], *parts: str) -> str:
    """Hex sha256 of ``files`` (relative path, content) and ``parts`` (what else decides the output)."""
    digest = hashlib.sha256()

    def field(value: bytes) -> None:
        # Length-prefixed so that no two different inputs hash the same byte stream.
        digest.update(len(value).to_bytes(8, "big"))
        digest.update(value)

    for relative, content in files:
        field(relative.encode())
        field(content)
    for part in parts:
        field(part.encode())
    return digest.hexdigest()


def _tool_env() -> dict[str, str]:
    # The tools are Rust: an inherited RUST_BACKTRACE=1 would bury their message under frames.
    return {**os.environ, "RUST_BACKTRACE": "0"}


PROGRESS_EVERY_S = 5.0
"""A build still running is reported this often (a cold componentize-py build takes 10-30 s)."""


def run_tool(argv: list[str], *, cwd: Path | None, timeout_s: float, what: str, source: Path | None = None) -> str:
    """Run a build tool; return its stdout, or raise BuildError with its error output.

    A tool still running after ``PROGRESS_EVERY_S`` is logged every as often with the project it
    builds (``source``) and the time taken so far, so a first start that builds for half a
    minute is never silent.

    Raises:
        BuildError: it could not start, timed out or failed; the message starts with ``what``.
    """
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            argv, cwd=cwd, env=_tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    except OSError as exc:
        raise BuildError(f"{what}: {exc}") from exc
    with process:
        while True:
            left_s = timeout_s - (time.monotonic() - started)
            try:
                stdout, stderr = process.communicate(timeout=max(0.0, min(PROGRESS_EVERY_S, left_s)))
                break
            except subprocess.TimeoutExpired:
                if left_s <= PROGRESS_EVERY_S:
                    process.kill()
                    process.communicate()
                    raise BuildError(f"{what}: timed out after {timeout_s} s") from None
                elapsed_s = round(time.monotonic() - started)
                log.info("still building", source=str(source or ""), tool=Path(argv[0]).name, elapsed_s=elapsed_s)
    if process.returncode != 0:
        detail = stderr.strip() or stdout.strip() or f"exit status {process.returncode}"
        raise BuildError(f"{what}:\n{detail}")
    return stdout
