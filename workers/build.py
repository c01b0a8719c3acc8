"""Build ``source`` components with componentize-py, cached by content hash.

A source project is a directory holding ``app.py`` and ``wit/``. Its build lands at
``<cache_dir>/built/<key>.wasm``, where the key hashes every file of the project, the world and
the toolchain version: an unchanged project never rebuilds, an edited one never reuses a stale
build. Builds happen in a private temporary directory and are renamed into place, so a reader
never sees a half-written file and two processes building the same key at once are harmless
(both build, the last rename wins, both results are equivalent).

The WIT doc comments, which every builder drops, are carried into the artifact as a custom
section named ``toolbus:docs`` (see ``read_docs``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from schemas.config import ComponentSettings
from workers.errors import BuildError

log = structlog.get_logger(__name__)

BUILD_TIMEOUT_S = 300
"""Upper bound of one componentize-py run; a cold build takes 5-7 s, so this only stops a hang."""
DOCS_TIMEOUT_S = 60
"""Upper bound of one ``wasm-tools component wit`` run (it takes milliseconds)."""
APP_MODULE = "app"
"""The Python module componentize-py wraps (``app.py`` at the project's top level)."""
WIT_DIR = "wit"
"""Where a project keeps its WIT files (``wit/deps`` included)."""
DOCS_SECTION = "toolbus:docs"
"""Name of the custom section holding the WIT doc comments (JSON)."""
BUILD_RECIPE_VERSION = "1"
"""Part of the cache key: bump it when the build's output changes (e.g. the docs section format)."""

_WASM_MAGIC = b"\0asm"
_CUSTOM_SECTION_ID = 0


def build_component(source_dir: Path, world: str, cache_dir: Path) -> Path:
    """Build ``source_dir`` against ``world`` unless a cached build exists; return the ``.wasm`` path.

    Raises:
        BuildError: the project is missing, a tool is missing, or componentize-py or wasm-tools
            failed or timed out; the message carries the tool's own error output.
    """
    files = _project_files(source_dir)
    key = _cache_key(files, world)
    built_dir = cache_dir / "built"
    output = built_dir / f"{key}.wasm"
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
        _run(
            [_tool("componentize-py"), "-q", "-d", WIT_DIR, "-w", world, "componentize", APP_MODULE, "-o", str(wasm)],
            cwd=project,
            timeout_s=BUILD_TIMEOUT_S,
            what=f"componentize-py could not build {source_dir} (world {world!r})",
        )
        docs = _wit_docs(project / WIT_DIR, world, source_dir)
        with wasm.open("ab") as out:
            out.write(_custom_section(DOCS_SECTION, json.dumps(docs, sort_keys=True).encode()))
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


def resolve_component_path(settings: ComponentSettings, cache_dir: Path) -> Path:
    """Path of the component's ``.wasm``: ``settings.path`` as given, or a (cached) build of ``source``.

    Raises:
        BuildError: building ``settings.source`` failed.
    """
    if settings.path is not None:
        return settings.path
    assert settings.source is not None  # ComponentSettings guarantees exactly one of the two
    return build_component(settings.source, settings.world or settings.name, cache_dir)


def source_key(source_dir: Path, world: str) -> str:
    """The cache key of building ``source_dir`` against ``world`` (the built file's stem).

    Raises:
        BuildError: ``source_dir`` is not a directory.
    """
    return _cache_key(_project_files(source_dir), world)


def read_docs(wasm_bytes: bytes) -> dict[str, Any]:
    """The ``toolbus:docs`` section of a component as a dict, or ``{}`` when it has none.

    Raises:
        ValueError: ``wasm_bytes`` is not a well-formed Wasm binary.
    """
    data = memoryview(wasm_bytes)
    if len(data) < 8 or data[:4] != _WASM_MAGIC:
        raise ValueError("not a Wasm binary (bad magic number)")
    # Walk only the top-level sections (id byte + LEB128 size); nested modules stay unread.
    offset = 8
    while offset < len(data):
        section_id = data[offset]
        size, offset = _read_leb128(data, offset + 1)
        end = offset + size
        if end > len(data):
            raise ValueError(f"section at byte {offset} runs past the end of the binary")
        if section_id == _CUSTOM_SECTION_ID:
            name_len, name_start = _read_leb128(data, offset)
            name_end = name_start + name_len
            if name_end > end:
                raise ValueError(f"custom section name at byte {name_start} runs past its section")
            if bytes(data[name_start:name_end]) == DOCS_SECTION.encode():
                docs = json.loads(bytes(data[name_end:end]))
                if not isinstance(docs, dict):
                    raise ValueError(f"{DOCS_SECTION} section does not hold a JSON object")
                return docs
        offset = end
    return {}


def _project_files(source_dir: Path) -> list[tuple[str, bytes]]:
    """Every file of the project in sorted relative-path order, without caches and dot-files."""
    if not source_dir.is_dir():
        raise BuildError(f"component source {source_dir} is not a directory")
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


def _cache_key(files: list[tuple[str, bytes]], world: str) -> str:
    """Hex sha256 of the project's files, the world, the toolchain and the recipe version."""
    digest = hashlib.sha256()

    def field(value: bytes) -> None:
        # Length-prefixed so that no two different inputs hash the same byte stream.
        digest.update(len(value).to_bytes(8, "big"))
        digest.update(value)

    for relative, content in files:
        field(relative.encode())
        field(content)
    field(world.encode())
    field(importlib.metadata.version("componentize-py").encode())
    field(BUILD_RECIPE_VERSION.encode())
    return digest.hexdigest()


def _tool(name: str) -> str:
    """Path of a console script installed with toolbus (next to this interpreter), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise BuildError(f"{name} not found next to {sys.executable} or on PATH")
    return found


def _tool_env() -> dict[str, str]:
    # The tools are Rust: an inherited RUST_BACKTRACE=1 would bury their message under frames.
    return {**os.environ, "RUST_BACKTRACE": "0"}


def _run(argv: list[str], *, cwd: Path, timeout_s: float, what: str) -> str:
    """Run a build tool; return its stdout, or raise BuildError with its error output."""
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


def _wit_docs(wit_dir: Path, world: str, source_dir: Path) -> dict[str, Any]:
    """The doc comments of ``world`` as stored in the ``toolbus:docs`` section."""
    out = _run(
        [_tool("wasm-tools"), "component", "wit", str(wit_dir), "--json"],
        cwd=wit_dir,
        timeout_s=DOCS_TIMEOUT_S,
        what=f"wasm-tools could not read the WIT of {source_dir}",
    )
    return _DocsExtractor(json.loads(out)).world(world)


class _DocsExtractor:
    """Turns the JSON of ``wasm-tools component wit --json`` into the ``toolbus:docs`` layout.

    The layout is keyed by export names as a host sees them, so a reader needs no WIT::

        {"world": doc,
         "funcs": {"add": {"docs": doc, "params": {"a": tree}, "result": tree}},
         "interfaces": {"ns:pkg/iface": {"docs": doc, "funcs": {...}}}}

    A ``tree`` mirrors a value's type and holds docs where the WIT has them:
    ``{"docs", "fields": {name: tree}, "cases": {name: tree}, "flags": {name: tree},
    "element", "payload", "ok", "err", "items": [tree]}``. Parts without docs are left out.
    """

    def __init__(self, resolve: dict[str, Any]) -> None:
        self._resolve = resolve

    def world(self, name: str) -> dict[str, Any]:
        """Docs of world ``name`` (a plain name, or ``ns:pkg/name``) and of what it exports."""
        world = self._find_world(name)
        funcs: dict[str, Any] = {}
        interfaces: dict[str, Any] = {}
        for export_name, item in world["exports"].items():
            if "function" in item:
                funcs[export_name] = self._function(item["function"])
            elif "interface" in item:
                iface = self._resolve["interfaces"][item["interface"]["id"]]
                key = self._interface_name(iface) or export_name
                interfaces[key] = {
                    "docs": _doc(iface),
                    "funcs": {n: self._function(f) for n, f in iface["functions"].items()},
                }
        return {"world": _doc(world), "funcs": funcs, "interfaces": interfaces}

    def _find_world(self, name: str) -> dict[str, Any]:
        short = name.rpartition("/")[2].partition("@")[0]
        # Packages come dependencies first, so the project's own world is the last match.
        for world in reversed(self._resolve["worlds"]):
            if world["name"] == short:
                return dict(world)
        raise BuildError(f"world {name!r} is not defined in the WIT")

    def _interface_name(self, iface: dict[str, Any]) -> str | None:
        """``ns:pkg/iface@version``, the name under which the component exports the interface."""
        if iface.get("name") is None or iface.get("package") is None:
            return None  # an inline interface is exported under its world-level name
        package, _, version = self._resolve["packages"][iface["package"]]["name"].partition("@")
        return f"{package}/{iface['name']}" + (f"@{version}" if version else "")

    def _function(self, func: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"docs": _doc(func)}
        params = {p["name"]: tree for p in func["params"] if (tree := self._tree(p["type"])) is not None}
        if params:
            entry["params"] = params
        if (result := self._tree(func.get("result"))) is not None:
            entry["result"] = result
        return entry

    def _tree(self, ref: Any, depth: int = 0) -> dict[str, Any] | None:
        """Docs of the type ``ref`` points to (a type index; primitives are strings and have none)."""
        # WIT types cannot recurse, so depth only guards against a malformed document.
        if not isinstance(ref, int) or depth > 64:
            return None
        typedef = self._resolve["types"][ref]
        kind = typedef["kind"]
        node: dict[str, Any] = {}
        if isinstance(kind, dict):
            if "type" in kind:  # an alias (`use`, `type x = y`): the target's docs unless it has its own
                node = self._tree(kind["type"], depth + 1) or {}
            elif "record" in kind:
                node["fields"] = self._members(kind["record"]["fields"], depth)
            elif "variant" in kind:
                node["cases"] = self._members(kind["variant"]["cases"], depth)
            elif "enum" in kind:
                node["cases"] = self._members(kind["enum"]["cases"], depth)
            elif "flags" in kind:
                node["flags"] = self._members(kind["flags"]["flags"], depth)
            elif "list" in kind:
                node["element"] = self._tree(kind["list"], depth + 1)
            elif "option" in kind:
                node["payload"] = self._tree(kind["option"], depth + 1)
            elif "result" in kind:
                node["ok"] = self._tree(kind["result"].get("ok"), depth + 1)
                node["err"] = self._tree(kind["result"].get("err"), depth + 1)
            elif "tuple" in kind:
                items = [self._tree(t, depth + 1) for t in kind["tuple"]["types"]]
                node["items"] = items if any(items) else None
        if (doc := _doc(typedef)) is not None:
            node["docs"] = doc
        node = {k: v for k, v in node.items() if v}
        return node or None

    def _members(self, members: list[dict[str, Any]], depth: int) -> dict[str, Any]:
        """Docs of record fields, variant/enum cases or flags, by name."""
        out: dict[str, Any] = {}
        for member in members:
            tree = self._tree(member.get("type"), depth + 1) or {}
            if (doc := _doc(member)) is not None:
                tree = {**tree, "docs": doc}
            if tree:
                out[member["name"]] = tree
        return out


def _doc(item: dict[str, Any]) -> str | None:
    contents = (item.get("docs") or {}).get("contents")
    return contents if isinstance(contents, str) and contents else None


def _custom_section(name: str, payload: bytes) -> bytes:
    """A Wasm custom section; valid at the end of a component (custom sections go anywhere)."""
    encoded_name = name.encode()
    body = _leb128(len(encoded_name)) + encoded_name + payload
    return bytes([_CUSTOM_SECTION_ID]) + _leb128(len(body)) + body


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_leb128(data: memoryview, offset: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 at ``offset``; return (value, offset after it)."""
    value = shift = 0
    while True:
        if offset >= len(data) or shift > 35:  # u32 sizes take at most 5 bytes
            raise ValueError(f"bad LEB128 size at byte {offset}")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset
