"""A component's tool-name prefix and task support in toolbus.toml: defaults, overrides, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import ComponentSettings, load_settings
from schemas.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "kit.wat").write_text("(component)", encoding="utf-8")
    path = tmp_path / "toolbus.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_keep_today_s_names_and_let_every_tool_run_as_a_task() -> None:
    component = ComponentSettings(name="kit", path=Path("kit.wat"))
    assert component.tool_prefix == "kit_"
    assert component.task_support("add", "kit_add") == "optional"


def test_a_component_and_its_tools_set_prefix_and_task(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[components]]
name = "kit"
path = "kit.wat"
prefix = ""
task = "required"
[components.tools.greet]
task = "forbidden"
""",
    )
    (component,) = load_settings(path).components
    assert component.tool_prefix == ""
    assert component.task_support("greet", "greet") == "forbidden"
    assert component.task_support("slow-compute", "slow_compute") == "required"


def test_client_capabilities_of_a_component_and_of_one_tool() -> None:
    component = ComponentSettings.model_validate(
        {
            "name": "kit",
            "path": "kit.wat",
            "client_capabilities": ["roots"],
            "tools": {"ask": {"client_capabilities": ["sampling", "elicitation", "sampling"]}},
        }
    )
    assert component.needs("ask", "kit_ask") == ("sampling", "elicitation")
    assert component.needs("add", "kit_add") == ("roots",)


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ('task = "sometimes"', "components[0].task"),
        ('prefix = "a.b"', "components[0].prefix"),
        ('kind = "command"\ninput_schema = { type = "object" }\nprefix = ""', "prefix: only for kind = 'component'"),
        ('[components.tools.add]\ntask = "always"', "components[0].tools.add.task"),
        ('client_capabilities = ["telepathy"]', "components[0].client_capabilities[0]"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(tmp_path: Path, entry: str, named: str) -> None:
    path = write(tmp_path, f'[[components]]\nname = "kit"\npath = "kit.wat"\n{entry}\n')
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    assert named in str(refused.value)
