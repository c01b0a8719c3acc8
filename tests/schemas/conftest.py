"""Fixtures for the WIT mapping tests: the type zoo, a WAT component holding every WIT type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.schemas.wit_zoo import Zoo, get_zoo

Wit = Callable[[str], Any]
"""Looks up a zoo value type by name."""


@pytest.fixture(scope="session")
def zoo() -> Zoo:
    return get_zoo()


@pytest.fixture(scope="session")
def wit(zoo: Zoo) -> Wit:
    """Look up a zoo value type by name."""
    return zoo.types.__getitem__
