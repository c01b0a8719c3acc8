"""A source project as every toolchain sees it: its files, the content key of its build, its tools.

Both builders (``workers.toolchains.componentize`` and ``workers.toolchains.clang``) hash the
same project files into the same kind of key (``<cache_dir>/built/<key>.wasm``) and run their
compilers the same way, so those steps are written here once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from workers.toolchains.errors import BuildError


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


def run_tool(argv: list[str], *, cwd: Path | None, timeout_s: float, what: str) -> str:
    """Run a build tool; return its stdout, or raise BuildError with its error output.

    Raises:
        BuildError: it could not start, timed out or failed; the message starts with ``what``.
    """
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=_tool_env(), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{what}: timed out after {timeout_s} s") from exc
    except OSError as exc:
        raise BuildError(f"{what}: {exc}") from exc
    if done.returncode != 0:
        detail = done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}"
        raise BuildError(f"{what}:\n{detail}")
    return done.stdout
