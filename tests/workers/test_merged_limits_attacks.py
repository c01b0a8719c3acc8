"""Attack the limits a component gets from ``[worker.limits]`` and its own ``limits`` merged.

Each half can be valid alone and the merge not: ``[worker.limits] inline = true, timeout_s = 1``
with a component's ``limits = { timeout_s = 5 }`` is an inline tool that may hold the worker's
event loop for 5 s (the rule: inline calls are at most 1 s). The pydantic era's copy checked
nothing and served it; the msgspec Structs check the merge again (``__post_init__``): the load
must refuse it as a component load error naming the component, never serve it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import ComponentSettings, LimitsSettings
from tests.conftest import TESTKIT_WAT
from workers.errors import WorkersError
from workers.sandbox.engine import EngineHost
from workers.sources import load_one


@pytest.mark.parametrize(
    ("defaults", "own"),
    [
        ({"inline": True, "timeout_s": 1}, {"timeout_s": 5}),
        ({"inline": True, "timeout_s": 0.5}, {"timeout_s": 1.5, "memory_mib": 32}),
    ],
)
def test_limits_valid_alone_but_not_merged_refuse_the_component(
    defaults: dict[str, object], own: dict[str, object], engine_host: EngineHost, cache_dir: Path
) -> None:
    worker_limits = LimitsSettings.model_validate(defaults)
    configured = ComponentSettings.model_validate({"name": "kit", "path": TESTKIT_WAT, "limits": own})
    with pytest.raises(WorkersError, match=r"'kit'.*inline: .*at most 1 s"):
        load_one(configured, engine_host, cache_dir, defaults=worker_limits)
