"""Attack the settings moved from pydantic models to msgspec Structs (s25, schemas.settings_model).

Settings carry security decisions (auth, API keys, rate limits, body limits, grants, NATS
credentials): every config the pydantic models refused must still be refused, defaults must not
move, and secrets must stay out of every rendering. Where it can, this compares against the last
pydantic version of ``schemas/`` (commit ``PYDANTIC_ERA``), run in a subprocess from ``git archive``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import pickle
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest

from schemas import config
from schemas.config import LimitsSettings, NatsSettings, Settings, load_settings
from schemas.errors import ConfigError

PYDANTIC_ERA = "6bb8eb4"
"""main before s25: the settings were pydantic models."""

REPO = Path(__file__).resolve().parents[2]
HASH = "a" * 64
KEYED = {"resource": "https://h/mcp", "api_keys": {"k": {"sha256": HASH}}}
OAUTH = {"issuer": "https://issuer", "jwks_url": "https://issuer/jwks"}

# Every one of these was refused by the pydantic models (checked against PYDANTIC_ERA below).
REFUSED: dict[str, dict[str, Any]] = {
    # A trailing newline passes Python's `$`; pydantic's (Rust) regex refused it.
    "nats prefix with a newline": {"nats": {"prefix": "toolbus\n"}},
    "view name with a newline": {"views": {"v\n": {}}},
    "api key name with a newline": {"auth": {**KEYED, "api_keys": {"k\n": {"sha256": HASH}}}},
    "api key hash with a newline": {"auth": {**KEYED, "api_keys": {"k": {"sha256": HASH + "\n"}}}},
    "component name with a newline": {"components": [{"name": "c\n", "path": "/"}]},
    "component prefix with a newline": {"components": [{"name": "c", "path": "/", "prefix": "p\n"}]},
    "capability name with a newline": {"capabilities": {"c\n": {"kind": "env"}}},
    # Non-finite numbers against bounds.
    "NaN timeout": {"worker": {"limits": {"timeout_s": math.nan}}},
    "NaN leeway": {"auth": {**KEYED, "oauth": {**OAUTH, "leeway_s": math.nan}}},
    "NaN sample ratio": {"telemetry": {"sample_ratio": math.nan}},
    "inf sample ratio": {"telemetry": {"sample_ratio": math.inf}},
    "NaN rate window": {"rate_limits": {"per_principal": {"requests": 1, "per_s": math.nan}}},
    "'nan' rate window": {"rate_limits": {"per_principal": {"requests": 1, "per_s": "nan"}}},
    "inf rate window": {"rate_limits": {"per_principal": {"requests": 1, "per_s": math.inf}}},
    "-inf leeway": {"auth": {**KEYED, "oauth": {**OAUTH, "leeway_s": -math.inf}}},
    # Out of range, wrong types.
    "memory over 4 GiB": {"worker": {"limits": {"memory_mib": 4097}}},
    "memory zero": {"worker": {"limits": {"memory_mib": 0}}},
    "huge memory": {"worker": {"limits": {"memory_mib": 10**40}}},
    "negative port": {"gateway": {"port": -1}},
    "port 65536": {"gateway": {"port": 65536}},
    "fractional port": {"gateway": {"port": 80.5}},
    "body limit below 1 KiB": {"gateway": {"max_body_bytes": 1023}},
    "payload cap below 1 MiB": {"nats": {"max_payload_bytes": 1024}},
    "zero connections": {"gateway": {"max_connections": 0}},
    "zero rate": {"rate_limits": {"per_tool": {"requests": 0}}},
    "a day and a second": {"rate_limits": {"tools": {"t": {"requests": 1, "per_s": 86_401}}}},
    "store error policy": {"rate_limits": {"on_store_error": "allow"}},
    "audit arguments": {"audit": {"arguments": "all"}},
    "empty redact key": {"audit": {"redact_keys": [""]}},
    "short principal key": {"nats": {"principal_key": "short"}},
    "empty prefix": {"nats": {"prefix": ""}},
    "URL as a list": {"nats": {"url": ["nats://a"]}},
    "user as a number": {"nats": {"user": 5}},
    "password as a number": {"nats": {"password": 12345678}},
    "policy tools as a string": {"auth": {**KEYED, "policy": [{"tools": "*"}]}},
    "policy claim as a number": {"auth": {**KEYED, "policy": [{"claims": {"a": 1}}]}},
    "policy tasks as a word": {"auth": {**KEYED, "policy": [{"tasks": "maybe"}]}},
    "hash in capitals": {"auth": {**KEYED, "api_keys": {"k": {"sha256": HASH.upper()}}}},
    "short hash": {"auth": {**KEYED, "api_keys": {"k": {"sha256": HASH[:63]}}}},
    "hash as a number": {"auth": {**KEYED, "api_keys": {"k": {"sha256": 1}}}},
    "api key name with a dot": {"auth": {**KEYED, "api_keys": {"a.b": {"sha256": HASH}}}},
    "api key name of 65": {"auth": {**KEYED, "api_keys": {"k" * 65: {"sha256": HASH}}}},
    "view name in capitals": {"views": {"View": {}}},
    "empty view tool": {"views": {"v": {"tools": [""]}}},
    "otlp endpoint without scheme": {"telemetry": {"otlp_endpoint": "collector:4318"}},
    # Unknown keys at every level.
    "unknown top-level key": {"bogus": 1},
    "unknown section key": {"gateway": {"bogus": 1}},
    "unknown limits key": {"worker": {"limits": {"bogus": 1}}},
    "unknown api key field": {"auth": {**KEYED, "api_keys": {"k": {"sha256": HASH, "bogus": 1}}}},
    "unknown policy field": {"auth": {**KEYED, "policy": [{"bogus": 1}]}},
    "unknown oauth field": {"auth": {**KEYED, "oauth": {**OAUTH, "bogus": 1}}},
    "unknown rate limit field": {"rate_limits": {"tools": {"t": {"requests": 1, "bogus": 1}}}},
    "unknown capability field": {"capabilities": {"c": {"kind": "env", "bogus": 1}}},
    "unknown capability kind": {"capabilities": {"c": {"kind": "socket"}}},
    "capability without kind": {"capabilities": {"c": {"vars": {}}}},
    "unknown tool override field": {"components": [{"name": "c", "path": "/", "tools": {"f": {"bogus": 1}}}]},
    "unknown audit tool field": {"audit": {"tools": {"t": {"bogus": 1}}}},
    "unknown view field": {"views": {"v": {"bogus": 1}}},
    # Capability grants.
    "http allow empty": {"capabilities": {"c": {"kind": "http", "allow": []}}},
    "http allow with a scheme": {"capabilities": {"c": {"kind": "http", "allow": ["https://x"]}}},
    "guest path relative": {"capabilities": {"c": {"kind": "dir", "host": "/", "guest": "data"}}},
    "env name with a dash": {"capabilities": {"c": {"kind": "env", "from_host": ["A-B"]}}},
    "grant of an undefined capability": {"components": [{"name": "c", "path": "/", "capabilities": ["nope"]}]},
    "two dirs at one guest path": {
        "capabilities": {
            "a": {"kind": "dir", "host": "/", "guest": "/d"},
            "b": {"kind": "dir", "host": "/tmp", "guest": "/d"},
        },
        "components": [{"name": "c", "path": "/", "capabilities": ["a", "b"]}],
    },
    "http granted to a command": {
        "capabilities": {"h": {"kind": "http", "allow": ["x.example"]}},
        "components": [
            {"name": "c", "path": "/", "kind": "command", "input_schema": {"type": "object"}, "capabilities": ["h"]}
        ],
    },
    # Rules across fields.
    "auth with no method": {"auth": {"resource": "https://h/mcp"}},
    "auth resource not a URL": {"auth": {**KEYED, "resource": "h/mcp"}},
    "oauth with two key sources": {"auth": {**KEYED, "oauth": {**OAUTH, "jwks_file": "/jwks"}}},
    "oauth with no key source": {"auth": {**KEYED, "oauth": {"issuer": "i"}}},
    "oauth alg none": {"auth": {**KEYED, "oauth": {**OAUTH, "algorithms": ["RS256", "none"]}}},
    "oauth alg HS256": {"auth": {**KEYED, "oauth": {**OAUTH, "algorithms": ["HS256"]}}},
    "inline with a long timeout": {"worker": {"limits": {"inline": True, "timeout_s": 2}}},
    "inline by default with the default timeout": {"worker": {"limits": {"inline": True}}},
    "component inline with a long timeout": {
        "components": [{"name": "c", "path": "/", "limits": {"inline": True, "timeout_s": 5}}]
    },
    "signatures without keys": {"registry": {"require_signatures": True}},
    "two components of one name": {"components": [{"name": "c", "path": "/"}, {"name": "c", "path": "/"}]},
    "component with path and source": {"components": [{"name": "c", "path": "/", "source": "/"}]},
    "command with reused instances": {
        "components": [
            {"name": "c", "path": "/", "kind": "command", "input_schema": {"type": "object"}, "reuse_instances": True}
        ]
    },
    "command with an array schema": {
        "components": [{"name": "c", "path": "/", "kind": "command", "input_schema": {"type": "array"}}]
    },
    "component with an input schema": {"components": [{"name": "c", "path": "/", "input_schema": {"type": "object"}}]},
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_every_config_the_pydantic_models_refused_is_refused(name: str) -> None:
    with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
        Settings.model_validate(REFUSED[name])


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_every_refused_config_is_a_config_error_naming_no_secret(name: str) -> None:
    secret = "hunter2-hunter2-hunter2"
    data = {**REFUSED[name], "nats": {"password": secret, **REFUSED[name].get("nats", {})}}
    with pytest.raises(ConfigError) as refused:
        load_settings(None, **data)
    assert secret not in str(refused.value)


def _archive(commit: str, into: Path) -> Path | None:
    """``schemas/`` as it was at ``commit``, unpacked under ``into``; None outside a git checkout."""
    try:
        tar = subprocess.run(
            ["git", "-C", str(REPO), "archive", commit, "schemas"], capture_output=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    (into / "old.tar").write_bytes(tar)
    with tarfile.open(into / "old.tar") as archive:
        archive.extractall(into, filter="data")
    return into


_OLD_VERDICTS = textwrap.dedent(
    """
    import json, pickle, sys
    from schemas.config import Settings
    corpus = pickle.loads(open(sys.argv[1], "rb").read())
    verdicts = {}
    for name, data in corpus.items():
        try:
            Settings.model_validate(data)
            verdicts[name] = "accepted"
        except ValueError:
            verdicts[name] = "refused"
    print(json.dumps({"verdicts": verdicts, "defaults": Settings().model_dump(mode="json")}))
    """
)


def _run_in(root: Path, script: str, argument: Path) -> bytes:
    """What ``script`` prints, run with the checkout ``root`` first on the path, no settings in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOOLBUS_", "OTEL_"))}
    env["PYTHONPATH"] = str(root)
    env["HOME"] = os.environ.get("HOME", "/tmp")
    done = subprocess.run(
        [sys.executable, "-c", script, str(argument)], capture_output=True, check=True, env=env, cwd=root, timeout=120
    )
    return done.stdout


@pytest.fixture(scope="module")
def pydantic_era(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The pydantic models' verdicts on REFUSED and their defaults, with no settings in the environment."""
    root = _archive(PYDANTIC_ERA, tmp_path_factory.mktemp("pydantic-era"))
    if root is None:
        pytest.skip(f"no git checkout holding {PYDANTIC_ERA}")
    (root / "corpus.pickle").write_bytes(pickle.dumps(REFUSED))
    loaded: dict[str, Any] = json.loads(_run_in(root, _OLD_VERDICTS, root / "corpus.pickle"))
    return loaded


def test_the_corpus_is_what_the_pydantic_models_refused(pydantic_era: dict[str, Any]) -> None:
    accepted = sorted(n for n, v in pydantic_era["verdicts"].items() if v != "refused")
    assert accepted == []


def test_defaults_are_the_pydantic_models_defaults(
    pydantic_era: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("TOOLBUS_", "OTEL_")):
            monkeypatch.delenv(name)
    ours = msgspec.to_builtins(Settings(), enc_hook=str)
    theirs = pydantic_era["defaults"]
    # Paths come from $HOME and the cwd of each process; they are compared by the functions that make them.
    for key in ("state_dir", "cache_dir"):
        ours.pop(key)
        theirs.pop(key)
    # Changed on purpose since: a worker process per core, each pinned, at least two guests each
    # (docs/operations.md, [worker]).
    cores = config.usable_cores()
    changed = {field: ours["worker"].pop(field) for field in ("processes", "pin_to_cores", "concurrency")}
    assert changed == {"processes": cores, "pin_to_cores": True, "concurrency": max(2, cores)}
    theirs["worker"].pop("processes")
    theirs["worker"].pop("concurrency")
    assert ours == theirs


def test_secrets_stay_out_of_every_rendering() -> None:
    password, key = "hunter2-password-1", "principal-key-0123456789"
    settings = Settings(nats=NatsSettings(password=password, principal_key=key))
    renderings = [repr(settings), str(settings), f"{settings!r}", repr(settings.nats), str(settings.nats)]
    # rich (and anything else that pretty-prints) asks __rich_repr__, which msgspec gives every Struct.
    renderings += [repr(list(settings.nats.__rich_repr__())), repr(list(settings.__rich_repr__()))]
    for rendering in renderings:
        assert password not in rendering
        assert key not in rendering


def test_a_copy_runs_the_rules_across_fields_again() -> None:
    with pytest.raises(ValueError, match="inline"):
        LimitsSettings().model_copy(update={"inline": True})
    settings = Settings.model_validate({"auth": KEYED})
    assert settings.auth is not None
    with pytest.raises(ValueError, match="configure"):
        settings.auth.model_copy(update={"api_keys": {}})


@pytest.mark.parametrize(
    "overrides",
    [
        {"worker": {"concurrency": 0}},
        {"worker": {"concurrency": True}},
        {"gateway": {"port": "80x"}},
        {"gateway": {"max_body_bytes": 10}},
        {"nats": {"prefix": "a.b"}},
        {"nats": {"prefix": "a\n"}},
    ],
)
def test_command_line_overrides_are_checked_as_the_file_is(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        load_settings(None, **overrides)


ODD_PATHS = (
    "worker.concurrency",
    "worker.limits.timeout_s",
    "worker.limits.memory_mib",
    "worker.limits.inline",
    "worker.limits.fuel",
    "worker.metrics_port",
    "gateway.port",
    "gateway.max_body_bytes",
    "gateway.hot_path",
    "gateway.host",
    "registry.require_signatures",
    "telemetry.sample_ratio",
    "nats.prefix",
    "nats.user",
    "nats.replicas",
    "nats.connect_timeout_s",
    "audit.arguments",
    "audit.max_arguments_bytes",
    "rate_limits.on_store_error",
    "rate_limits.per_principal.per_s",
    "rate_limits.per_principal.requests",
)
"""A field of every kind a security decision rests on: counts, bounds, flags, words, patterns."""
ODD_VALUES: tuple[Any, ...] = (
    *(True, False, 0, 1, -1, 1.0, 1.5, 2**63, 2**64, 10**30, math.nan, math.inf, -math.inf),
    *("1", "1.0", "1e3", " 1", "0x10", "1_000", "4e-1", "nan", "inf", "Infinity", "", "a\n"),
    *("true", "True", "false", "0", "yes", "on", "redact", "local", "deny"),
    *(None, [], {}, datetime.date(2020, 1, 1), datetime.datetime(2020, 1, 1), datetime.time(1, 2)),
)
"""What TOML (or an override) can put in a field: numbers of every sort, strings that look like
numbers or flags, nothing, containers, TOML's dates and times."""

_ODD_VERDICTS = textwrap.dedent(
    """
    import pickle, sys
    from schemas.config import Settings
    paths, values = pickle.loads(open(sys.argv[1], "rb").read())
    verdicts = {}
    for path in paths:
        *sections, field = path.split(".")
        for i, value in enumerate(values):
            data = node = {}
            for section in sections:
                node = node.setdefault(section, {})
            node[field] = value
            if sections[-1] == "per_principal":
                node.setdefault("requests", 1)
            try:
                settings = Settings.model_validate(data)
            except ValueError:
                verdicts[path, i] = None
                continue
            for name in path.split("."):
                settings = getattr(settings, name)
            verdicts[path, i] = repr(settings)
    sys.stdout.buffer.write(pickle.dumps(verdicts))
    """
)


def _odd_verdicts(root: Path, work: Path) -> dict[tuple[str, int], str | None]:
    (work / "odd.pickle").write_bytes(pickle.dumps((ODD_PATHS, ODD_VALUES)))
    verdicts: dict[tuple[str, int], str | None] = pickle.loads(_run_in(root, _ODD_VERDICTS, work / "odd.pickle"))
    return verdicts


def test_odd_values_are_refused_or_read_as_the_pydantic_models_read_them(tmp_path: Path) -> None:
    old_root = _archive(PYDANTIC_ERA, tmp_path)
    if old_root is None:
        pytest.skip(f"no git checkout holding {PYDANTIC_ERA}")
    old, new = _odd_verdicts(old_root, tmp_path), _odd_verdicts(REPO, tmp_path)
    looser = []
    for (path, i), was in old.items():
        now = new[path, i]
        if now is None or now == was:
            continue  # refused (as before, or now: stricter is fine), or read the same
        looser.append((path, ODD_VALUES[i], was, now))
    # Known and harmless: msgspec's lax ints read "1e3" (pydantic refused it); the value still meets
    # its field's bounds. Anything else read differently, or accepted where it was refused, fails.
    assert [case for case in looser if case[1] != "1e3"] == []


def _deep(depth: int) -> dict[str, Any]:
    """An object schema nested ``depth`` objects deep (built without recursion)."""
    root: dict[str, Any] = {"type": "object"}
    node = root
    for _ in range(depth):
        node["x"] = {}
        node = node["x"]
    return root


COMMAND = {"name": "c", "path": "/", "kind": "command"}


def test_a_deeply_nested_schema_is_read_as_the_pydantic_models_read_it() -> None:
    # A command's input_schema is plain data its author nests as deep as they like (a published
    # package's settings come from its publisher): reading it must not exhaust the stack.
    deep = Settings.model_validate({"components": [{**COMMAND, "input_schema": _deep(100_000)}]})
    assert deep.components[0].model_fields_set == {"name", "path", "kind", "input_schema"}


@pytest.mark.parametrize(
    "data",
    [
        {"components": [{"name": "c", "path": "/", "input_schema": _deep(100_000)}]},  # not for a component
        {"components": [{**COMMAND, "input_schema": _deep(100_000), "output_schema": {"type": 5}}]},
        {"components": [{"name": "c", "path": "/", "tools": {"f": _deep(100_000)}}]},
        {"auth": {**KEYED, "policy": [{"claims": _deep(100_000)}]}},
        {"rate_limits": {"tools": {"t": _deep(100_000)}}},
        {"capabilities": {"c": {"kind": "env", "vars": _deep(100_000)}}},
    ],
)
def test_deep_nesting_in_a_refused_config_is_a_config_error(data: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        load_settings(None, **data)


@pytest.mark.parametrize("value", ["0", "6", "abc", "²", "1e1", " 3", "-1", "3.0"])
def test_a_bad_replicas_variable_is_a_config_error(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Defaults from the environment are made by their own functions (msgspec never checks a
    # default): those must refuse as the pydantic era did.
    monkeypatch.setenv("TOOLBUS_NATS_REPLICAS", value)
    with pytest.raises(ConfigError, match="TOOLBUS_NATS_REPLICAS"):
        load_settings()
