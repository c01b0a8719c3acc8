"""Every third-party module our packages import is a declared dependency in pyproject.toml.

A module that only arrives through another package (``jwt`` through ``mcp``) disappears the day
that package stops requiring it; declaring it says we rely on it ourselves.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def our_packages() -> list[str]:
    """The top-level packages the wheel ships (pyproject's ``packages.find`` include patterns)."""
    return [pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]


def imported_modules(package: str) -> set[str]:
    """Every absolute module name imported anywhere in ``package``."""
    found: set[str] = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return found


def distributions_of(module: str) -> set[str]:
    """The installed distributions that provide ``module`` (namespace packages: the one holding its file)."""
    top = module.split(".")[0]
    candidates = importlib.metadata.packages_distributions().get(top, [])
    if len(candidates) <= 1:
        return {normalized(name) for name in candidates}
    spec = importlib.util.find_spec(module)
    origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
    owners = set()
    for name in candidates:
        files = importlib.metadata.distribution(name).files or []
        if origin is not None and any(Path(str(f.locate())).resolve() == origin for f in files):
            owners.add(normalized(name))
    return owners


def test_every_third_party_import_is_declared() -> None:
    ours = our_packages()
    declared = {
        normalized(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0])
        for requirement in PYPROJECT["project"]["dependencies"]
    }
    missing = {}
    for package in ours:
        for module in imported_modules(package):
            top = module.split(".")[0]
            if top in ours or top in sys.stdlib_module_names:
                continue
            owners = distributions_of(module)
            assert owners, f"{package}/ imports {module}, which no installed distribution provides"
            if not owners & declared:
                missing[module] = sorted(owners)
    assert not missing, f"imported but not declared in pyproject.toml [project] dependencies: {missing}"
