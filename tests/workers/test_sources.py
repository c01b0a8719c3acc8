"""Tool source kinds: a source's Wasm is its ``path`` as given, or a cached build of its ``source``."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import ComponentSettings
from tests.workers.conftest import EXAMPLES_DIR
from workers.sources import COMPONENT

resolve_component_path = COMPONENT.resolve
"""How a worker finds a component's ``.wasm`` (moved here from the componentize toolchain)."""


@pytest.mark.slow
def test_resolve_component_path(calc_wasm: Path, cache_dir: Path, tmp_path: Path) -> None:
    built = tmp_path / "given.wasm"
    assert resolve_component_path(ComponentSettings(name="x", path=built), cache_dir) == built
    # `world` defaults to the component's name.
    from_source = ComponentSettings(name="calc", source=EXAMPLES_DIR / "calc")
    assert resolve_component_path(from_source, cache_dir) == calc_wasm
