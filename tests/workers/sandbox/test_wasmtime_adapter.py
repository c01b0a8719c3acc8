"""wasmtime-py's private names the worker uses (all in ``workers.sandbox.wasmtime_adapter``) still exist.

A wasmtime-py upgrade that renames one fails here, by name, instead of in a guest that can no
longer be cancelled or a command that no longer gets its stdin.
"""

from __future__ import annotations

import ast
from importlib.metadata import version
from pathlib import Path

from wasmtime import _ffi
from wasmtime.component import _types as component_types

from workers.sandbox.wasmtime_adapter import COMPONENT_TYPES_NAMES, PRIVATE_NAMES, PerThreadSet

WORKERS = Path(__file__).resolve().parents[3] / "workers"
PINNED_WASMTIME = "51."
"""The wasmtime-py release line these private names were checked against (pyproject pins ``<52``);
a new major version must be checked again."""


def test_the_pinned_wasmtime_is_installed() -> None:
    assert version("wasmtime").startswith(PINNED_WASMTIME), (
        "wasmtime-py changed: re-check workers/sandbox/wasmtime_adapter.py"
    )


def test_every_private_name_exists_on_the_installed_wasmtime() -> None:
    for name in PRIVATE_NAMES:
        assert hasattr(_ffi, name), f"wasmtime._ffi.{name} is gone from wasmtime {version('wasmtime')}"
    for name in COMPONENT_TYPES_NAMES:
        assert hasattr(component_types, name), f"wasmtime.component._types.{name} is gone"
    assert isinstance(component_types.case_test_cache, PerThreadSet), "the per-thread scratch set is not installed"


def test_no_other_worker_module_imports_wasmtime_private_modules() -> None:
    for path in sorted(WORKERS.rglob("*.py")):
        if path.name == "wasmtime_adapter.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wasmtime"):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                where = f"{path.name}:{node.lineno}"
                assert not private, f"{where}: wasmtime.{private} belongs in workers/sandbox/wasmtime_adapter.py"
                assert "._" not in (node.module or ""), f"{path.name}:{node.lineno}: {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert "._" not in alias.name, f"{path.name}:{node.lineno}: {alias.name}"
