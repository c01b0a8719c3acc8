"""Build ``source`` command modules from C with clang and wasi-libc, cached by content hash.

A C project is a directory of ``*.c`` files (headers beside them), compiled together into one
WASI command module (core wasm32-wasi, entry point ``_start``) with Debian's toolchain:
``clang-19 --target=wasm32-wasi --sysroot=/usr``. The build lands at
``<cache_dir>/built/<key>.wasm``, keyed like componentize-py builds (``workers.toolchains.projects.content_key``)
by every file of the project plus this recipe: the compiler's version and flags.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from pathlib import Path

import structlog

from workers.cache_lock import building
from workers.toolchains.errors import BuildError
from workers.toolchains.installers import debian_binary
from workers.toolchains.projects import content_key, project_files, run_tool

log = structlog.get_logger(__name__)

CLANG = "clang-19"
"""The compiler; Debian's clang-19 ships the wasm32 target."""
DEBIAN_PACKAGES = ("clang-19", "lld-19", "libclang-rt-19-dev-wasm32", "wasi-libc")
"""What ``apt-get install`` needs for ``CLANG`` to produce WASI command modules."""
C_FLAGS = ("--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-Wl,--strip-all")
"""Debian's wasi-libc lives under /usr; stripping names cuts a small module from ~150 KB to ~35 KB."""
BUILD_TIMEOUT_S = 120
"""Upper bound of one clang run; a small tool compiles in well under a second."""
RECIPE_VERSION = "1"
"""Part of the cache key: bump it when the build's output changes for the same inputs."""


def build_c_command(source_dir: Path, cache_dir: Path) -> Path:
    """Compile the C project ``source_dir`` unless a cached build exists; return the ``.wasm`` path.

    Raises:
        BuildError: the project has no C file, clang is missing, or the compile failed or
            timed out; the message carries clang's own error output.
    """
    files = project_files(source_dir)
    sources = [source_dir / relative for relative, _ in files if relative.endswith(".c")]
    if not sources:
        raise BuildError(f"command source {source_dir} holds no .c file")
    clang = debian_binary(CLANG, DEBIAN_PACKAGES)  # installed on first use
    key = content_key(files, _recipe(clang))
    built_dir = cache_dir / "built"
    output = built_dir / f"{key}.wasm"
    with building(output):  # workers starting together build it once (workers.cache_lock)
        if output.is_file():
            log.info("build cache hit", source=str(source_dir), path=str(output))
            return output
        built_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        # Compile next to the output and rename into place: readers never see a partial file.
        fd, scratch = tempfile.mkstemp(prefix=f".{key[:16]}-", suffix=".wasm", dir=built_dir)
        os.close(fd)
        try:
            argv = [clang, *C_FLAGS, "-I", str(source_dir), "-o", scratch, *map(str, sources)]
            run_tool(
                argv,
                cwd=None,
                timeout_s=BUILD_TIMEOUT_S,
                what=f"{CLANG} could not build {source_dir}",
                source=source_dir,
            )
            os.replace(scratch, output)
        finally:
            Path(scratch).unlink(missing_ok=True)
        log.info(
            "command built", source=str(source_dir), path=str(output), duration_s=round(time.monotonic() - started, 3)
        )
        return output


@functools.cache
def _recipe(clang: str) -> str:
    """What, besides the sources, decides the output: compiler version, flags, recipe version."""
    out = run_tool([clang, "--version"], cwd=None, timeout_s=30, what=f"{clang} --version failed")
    version = out.splitlines()[0] if out else "unknown"
    return f"c-command;{version};{' '.join(C_FLAGS)};{RECIPE_VERSION}"
