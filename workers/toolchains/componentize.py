"""Build ``source`` components from Python (componentize-py) or JavaScript (componentize-js),
cached by content hash.

A source project is a directory holding ``wit/`` and ``app.py`` (Python) or ``app.js``
(JavaScript: componentize-js from npm, installed into the cache on first use). Its build lands at
``<cache_dir>/built/<key>.wasm``, where the key hashes every file of the project, the world and
the toolchain version: an unchanged project never rebuilds, an edited one never reuses a stale
build. Builds happen in a private temporary directory and are renamed into place, so a reader
never sees a half-written file and two processes building the same key at once are harmless
(both build, the last rename wins, both results are equivalent).

toolbus's own WIT packages (``schemas/wit``, e.g. ``toolbus:http``) are added to the project's
``wit/deps`` in the build copy, so a guest can import them without vendoring the files; a
project that ships its own copy of a package keeps it.

The WIT doc comments, which every builder drops, are carried into the artifact as a custom
section named ``toolbus:docs`` (see ``workers.toolchains.wit_docs``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

import schemas
from workers.cache_lock import building
from workers.toolchains.errors import BuildError
from workers.toolchains.installers import npm_install
from workers.toolchains.projects import content_key, project_files, run_tool
from workers.toolchains.wit_docs import docs_section, extract_docs

log = structlog.get_logger(__name__)

BUILD_TIMEOUT_S = 300
"""Upper bound of one componentize-py run; a cold build takes 5-7 s, so this only stops a hang."""
DOCS_TIMEOUT_S = 60
"""Upper bound of one ``wasm-tools component wit`` run (it takes milliseconds)."""
APP_MODULE = "app"
"""The Python module componentize-py wraps (``app.py`` at the project's top level)."""
JS_APP = "app.js"
"""The JavaScript module componentize-js wraps."""
COMPONENTIZE_JS = ("@bytecodealliance/componentize-js", "0.23.0")
"""The npm package and version that builds JavaScript components (StarlingMonkey inside)."""
JS_DISABLED_FEATURES = ("http", "fetch-event")
"""WASI features a JavaScript guest is built without: toolbus guests reach the network only
through ``toolbus:http`` grants, so importing ``wasi:http`` would only fail to link."""
WIT_DIR = "wit"
"""Where a project keeps its WIT files (``wit/deps`` included)."""
HOST_WIT_DIR = Path(schemas.__file__).parent / "wit"
"""toolbus's own WIT packages, one directory each, offered to every project as ``wit/deps``."""
BUILD_RECIPE_VERSION = "1"
"""Part of the cache key: bump it when the build's output changes (e.g. the docs section format)."""


def build_component(source_dir: Path, world: str, cache_dir: Path) -> Path:
    """Build ``source_dir`` against ``world`` unless a cached build exists; return the ``.wasm`` path.

    Raises:
        BuildError: the project is missing, a tool is missing, or componentize-py or wasm-tools
            failed or timed out; the message carries the tool's own error output.
    """
    files = _componentize_inputs(source_dir)
    javascript = any(relative == JS_APP for relative, _ in files)
    if not javascript and not any(relative == f"{APP_MODULE}.py" for relative, _ in files):
        raise BuildError(f"source {source_dir} holds neither {APP_MODULE}.py (Python) nor {JS_APP} (JavaScript)")
    key = _build_key(files, world, javascript=javascript)
    built_dir = cache_dir / "built"
    output = built_dir / f"{key}.wasm"
    with building(output):  # workers starting together build it once (workers.cache_lock)
        if output.is_file():
            log.info("build cache hit", source=str(source_dir), world=world, path=str(output))
            return output
        built_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        # The scratch directory sits next to the output so os.replace stays on one file system.
        scratch = Path(tempfile.mkdtemp(prefix=f".{key[:16]}-", dir=built_dir))
        try:
            # Build from a copy of exactly the hashed files: the key then describes the input, and
            # componentize-py's __pycache__ lands in the scratch copy, not in the user's tree.
            project = scratch / "project"
            for relative, content in files:
                target = project / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            wasm = scratch / "component.wasm"
            if javascript:
                package, version = COMPONENTIZE_JS
                installed = npm_install(cache_dir, f"componentize-js-{version}", [f"{package}@{version}"])
                componentize_js = installed / "node_modules" / ".bin" / "componentize-js"
                argv = [str(componentize_js), JS_APP, "--wit", WIT_DIR, "--world-name", world, "-o", str(wasm)]
                argv += ["--disable", *JS_DISABLED_FEATURES]
            else:
                argv = [_tool("componentize-py"), "-q", "-d", WIT_DIR, "-w", world, "componentize", APP_MODULE]
                argv += ["-o", str(wasm)]
            builder = "componentize-js" if javascript else "componentize-py"
            run_tool(
                argv,
                cwd=project,
                timeout_s=BUILD_TIMEOUT_S,
                what=f"{builder} could not build {source_dir} (world {world!r})",
                source=source_dir,
            )
            docs = _wit_docs(project / WIT_DIR, world, source_dir)
            with wasm.open("ab") as out:
                out.write(docs_section(docs))
            os.replace(wasm, output)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log.info(
            "component built",
            source=str(source_dir),
            world=world,
            path=str(output),
            duration_s=round(time.monotonic() - started, 3),
        )
        return output


def _componentize_inputs(source_dir: Path) -> list[tuple[str, bytes]]:
    """What componentize-py builds from: the project, plus toolbus's WIT packages it lacks."""
    files = project_files(source_dir)
    return sorted(files + _host_wit_files(files))


def _host_wit_files(project_files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """toolbus's WIT packages as ``wit/deps/<package>/…`` entries the project does not have itself."""
    deps = f"{WIT_DIR}/deps/"
    vendored = {relative[len(deps) :].split("/", 1)[0] for relative, _ in project_files if relative.startswith(deps)}
    return [
        (f"{deps}{path.relative_to(HOST_WIT_DIR).as_posix()}", path.read_bytes())
        for path in sorted(HOST_WIT_DIR.rglob("*.wit"))
        if path.relative_to(HOST_WIT_DIR).parts[0] not in vendored
    ]


def _build_key(files: list[tuple[str, bytes]], world: str, *, javascript: bool) -> str:
    """The key of a build: the files, the world, the toolchain and its version, the recipe."""
    toolchain = f"componentize-js {COMPONENTIZE_JS[1]}" if javascript else importlib.metadata.version("componentize-py")
    return content_key(files, world, toolchain, BUILD_RECIPE_VERSION)


def _tool(name: str) -> str:
    """Path of a console script installed with toolbus (next to this interpreter), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise BuildError(f"{name} not found next to {sys.executable} or on PATH")
    return found


def _wit_docs(wit_dir: Path, world: str, source_dir: Path) -> dict[str, Any]:
    """The doc comments of ``world`` as stored in the ``toolbus:docs`` section."""
    # wasm-tools runs here, beside componentize-py, so that one module owns the toolchain;
    # workers.toolchains.wit_docs only interprets its JSON (and so needs no subprocess and no cycle back here).
    out = run_tool(
        [_tool("wasm-tools"), "component", "wit", str(wit_dir), "--json"],
        cwd=wit_dir,
        timeout_s=DOCS_TIMEOUT_S,
        what=f"wasm-tools could not read the WIT of {source_dir}",
    )
    return extract_docs(json.loads(out), world)
