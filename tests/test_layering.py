"""The layering of docs/architecture.md as a test: no role imports another role's package, and the
packages below the roles (``schemas``, ``bus``, ``stores``) import no role. A role that needs shared
JetStream data imports ``stores``; one that needs the bus imports ``bus``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROLES = frozenset({"gateway", "workers", "registry"})
MAY_NOT_IMPORT: dict[str, frozenset[str]] = {
    "schemas": ROLES | {"bus", "stores"},
    "bus": ROLES | {"stores"},
    "stores": ROLES,
    **{role: ROLES - {role} for role in ROLES},
}
"""Package → the packages of ours it must never import."""


def imported_packages(path: Path) -> set[str]:
    """The top-level packages ``path`` imports by absolute name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.partition(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(MAY_NOT_IMPORT))
def test_a_package_imports_nothing_above_it_or_beside_it(package: str) -> None:
    wrong = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sorted((REPO / package).rglob("*.py"))
        for name in sorted(imported_packages(path) & MAY_NOT_IMPORT[package])
    ]
    assert not wrong, wrong
