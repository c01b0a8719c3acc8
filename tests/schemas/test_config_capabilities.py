"""Named capabilities in toolbus.toml: their shapes, the grants components name, and errors
that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.capabilities import DirCapability, EnvCapability, HttpCapability
from schemas.config import load_settings
from schemas.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "kit.wat").write_text("(component)", encoding="utf-8")
    path = tmp_path / "toolbus.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_each_kind_of_capability_and_relative_directories(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[capabilities.docs]
kind = "dir"
host = "data/docs"
guest = "/docs"

[capabilities.scratch]
kind = "dir"
host = "/var/tmp"
guest = "/tmp"
writable = true

[capabilities.weather-key]
kind = "env"
vars = { WEATHER_KEY = "abc" }
from_host = ["REGION"]

[capabilities.weather-api]
kind = "http"
allow = ["api.weather.example", "127.0.0.1:8080", "*.example.org", "[::1]:9000"]

[[components]]
name = "kit"
path = "kit.wat"
capabilities = ["docs", "weather-api", "weather-key"]
""",
    )
    settings = load_settings(path)
    assert settings.capabilities == {
        "docs": DirCapability(host=tmp_path / "data" / "docs", guest="/docs"),
        "scratch": DirCapability(host=Path("/var/tmp"), guest="/tmp", writable=True),
        "weather-key": EnvCapability(vars={"WEATHER_KEY": "abc"}, from_host=["REGION"]),
        "weather-api": HttpCapability(allow=["api.weather.example", "127.0.0.1:8080", "*.example.org", "[::1]:9000"]),
    }
    assert settings.components[0].capabilities == ["docs", "weather-api", "weather-key"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'capabilities = ["nope"]',
            "components[0].capabilities: 'nope' is not defined under [capabilities]",
        ),
        (
            'capabilities = ["a", "b"]\n[capabilities.a]\nkind = "dir"\nhost = "."\nguest = "/d"\n'
            '[capabilities.b]\nkind = "dir"\nhost = "."\nguest = "/d"',
            "components[0].capabilities: two directories are mounted at /d",
        ),
        (
            '[capabilities.a]\nkind = "dir"\nhost = "."\nguest = "relative"',
            "capabilities.a.dir.guest: 'relative' is not an absolute guest path",
        ),
        ('[capabilities.a]\nkind = "socket"', "capabilities.a: Input tag 'socket' found using 'kind'"),
        ('[capabilities.a]\nkind = "http"\nallow = []', "capabilities.a.http.allow: List should have at least 1 item"),
        (
            '[capabilities.a]\nkind = "http"\nallow = ["http://x.org/"]',
            "capabilities.a.http.allow[0]: 'http://x.org/' is not a host, host:port",
        ),
        (
            '[capabilities.a]\nkind = "env"\nvars = { "1BAD" = "x" }',
            "capabilities.a.env.vars.1BAD.[key]: '1BAD' is not an environment variable name",
        ),
    ],
)
def test_capability_mistakes_name_the_field(tmp_path: Path, body: str, message: str) -> None:
    component, _, rest = body.partition("\n")
    if not component.startswith("capabilities ="):
        component, rest = "", body
    path = write(tmp_path, f'[[components]]\nname = "kit"\npath = "kit.wat"\n{component}\n{rest}\n')
    with pytest.raises(ConfigError) as failure:
        load_settings(path)
    assert message in str(failure.value)
