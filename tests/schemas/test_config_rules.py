"""Settings are msgspec Structs: rules across fields, their wording, what a copy keeps, secrets in repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import LimitsSettings, NatsSettings, Settings, load_settings
from schemas.errors import ConfigError
from tests.cli.test_main import loaded_after


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "kit.wat").write_text("(component)", encoding="utf-8")
    path = tmp_path / "toolbus.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # A rule of a nested section is placed at that section's path.
        (
            '[[components]]\nname = "kit"',
            "components[0]: give exactly one of 'path' (a built component) or 'source' (a project to build)",
        ),
        (
            '[[components]]\nname = "kit"\npath = "kit.wat"\nworld = "w"\nkind = "command"\n'
            'input_schema = {type = "object"}',
            "components[0]: world: only for kind = 'component'",
        ),
        ('[auth]\nresource = "https://h/mcp"', "auth: configure [auth.oauth] or at least one [auth.api_keys.NAME]"),
        # A rule of the whole file names its own field.
        (
            '[[components]]\nname = "kit"\npath = "kit.wat"\n[[components]]\nname = "kit"\npath = "kit.wat"',
            "components[1].name: 'kit' is used twice",
        ),
        # A field's own mistakes are all listed, as pydantic words them.
        (
            "[worker]\nconcurrency = 0\nqueue_depth = -1",
            "worker.concurrency: Input should be greater than or equal to 1; "
            "worker.queue_depth: Input should be greater than or equal to 0",
        ),
        ('[nats]\nprefix = "a b"', "nats.prefix: String should match pattern '^[A-Za-z0-9_-]+$'"),
    ],
)
def test_a_broken_rule_is_named_with_its_place(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(write(tmp_path, body))
    assert str(refused.value).endswith(f"toolbus.toml: {message}")


def test_a_copy_and_a_construction_keep_the_rules() -> None:
    with pytest.raises(ValueError, match="timeout_s must be at most 1 s"):
        LimitsSettings().model_copy(update={"inline": True})
    copy = LimitsSettings.model_validate({"memory_mib": 32}).model_copy(update={"fuel": 10})
    assert copy.model_fields_set == {"memory_mib", "fuel"}
    assert LimitsSettings(fuel=5).model_fields_set == {"fuel"}


def test_the_body_limit_follows_the_payload_cap_unless_given() -> None:
    assert Settings().gateway.max_body_bytes == 65 * 1024 * 1024
    given = Settings.model_validate({"gateway": {"max_body_bytes": 4096}})
    assert given.gateway.max_body_bytes == 4096


def test_secrets_are_not_in_repr() -> None:
    nats = NatsSettings(password="hunter2-hunter2", principal_key="k" * 32)
    assert "hunter2" not in repr(nats) and "k" * 32 not in repr(nats)
    assert "password=**********" in repr(nats) and "user=None" in repr(nats)


def test_a_good_config_loads_without_pydantic() -> None:
    # pydantic is only for wording a mistake; loading it costs a worker restart ~100 ms (issue 17).
    assert loaded_after("from schemas.config import load_settings; load_settings()", ("pydantic",)) == []
