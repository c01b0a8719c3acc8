"""Fixtures shared by the worker tests: the example components, built for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.build import build_component

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


# Session-scoped and built into the session's shared `cache_dir` (tests/conftest.py), so each
# example is built once per session (~6 s) whichever test asks first.
@pytest.fixture(scope="session")
def calc_wasm(cache_dir: Path) -> Path:
    """The calc example, built with componentize-py."""
    return build_component(EXAMPLES_DIR / "calc", "calc", cache_dir)


@pytest.fixture(scope="session")
def inventory_wasm(cache_dir: Path) -> Path:
    """The inventory example, built with componentize-py."""
    return build_component(EXAMPLES_DIR / "inventory", "inventory", cache_dir)
