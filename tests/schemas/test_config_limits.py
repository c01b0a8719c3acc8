"""Per-tool limits in toolbus.toml: defaults, per-component overrides, errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import ComponentSettings, LimitsSettings, load_settings
from schemas.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "kit.wat").write_text("(component)", encoding="utf-8")
    path = tmp_path / "toolbus.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    settings = load_settings(None)
    assert settings.worker.limits == LimitsSettings(timeout_s=30, memory_mib=64, fuel=None, max_concurrency=None)
    component = ComponentSettings(name="kit", path=Path("kit.wat"))
    assert component.limits is None and component.reuse_instances is False


def test_worker_defaults_and_a_component_override(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[worker.limits]
timeout_s = 10
fuel = 1_000_000

[[components]]
name = "kit"
path = "kit.wat"
reuse_instances = true
limits = { memory_mib = 128, max_concurrency = 2 }

[[components]]
name = "plain"
path = "kit.wat"
""",
    )
    settings = load_settings(path)
    defaults = settings.worker.limits
    assert defaults == LimitsSettings(timeout_s=10, fuel=1_000_000)
    kit, plain = settings.components
    assert kit.reuse_instances and not plain.reuse_instances
    # Only the fields the component gives replace the worker's defaults.
    assert defaults.merged(kit.limits) == LimitsSettings(
        timeout_s=10, memory_mib=128, fuel=1_000_000, max_concurrency=2
    )
    assert defaults.merged(plain.limits) is defaults


def test_an_override_equal_to_the_builtin_default_still_overrides() -> None:
    defaults = LimitsSettings(memory_mib=256)
    override = LimitsSettings.model_validate({"memory_mib": 64})
    assert defaults.merged(override).memory_mib == 64


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[worker.limits]\nmemory_mib = 0", "worker.limits.memory_mib: Input should be greater than or equal to 1"),
        ("[worker.limits]\nmemory_mib = 5000", "worker.limits.memory_mib: Input should be less than or equal to 4096"),
        ("[worker.limits]\ntimeout_s = 0", "worker.limits.timeout_s: Input should be greater than 0"),
        ("[worker.limits]\nfuel = -1", "worker.limits.fuel: Input should be greater than or equal to 1"),
        (
            "[worker.limits]\nmax_concurrency = 0",
            "worker.limits.max_concurrency: Input should be greater than or equal to 1",
        ),
        ("[worker.limits]\ncpu = 1", "worker.limits.cpu: Extra inputs are not permitted"),
        (
            '[[components]]\nname = "kit"\npath = "kit.wat"\nlimits = { fuel = "lots" }',
            "components[0].limits.fuel: Input should be a valid integer",
        ),
        (
            '[[components]]\nname = "kit"\npath = "kit.wat"\nreuse_instances = "sometimes"',
            "components[0].reuse_instances: Input should be a valid boolean",
        ),
    ],
)
def test_bad_limits_name_the_file_and_field(tmp_path: Path, toml: str, message: str) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
