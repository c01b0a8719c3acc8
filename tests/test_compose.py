"""compose.yaml, its configs and the Dockerfile, checked without a Docker engine (in seconds;
tests/deploy/ runs them under a real dockerd).

Each part is checked by the real thing that will read it: the Compose JSON Schema for
compose.yaml, the ``toolbus`` CLI parser for every command, ``schemas.config`` for every
toolbus.toml, and nats-server itself (``-t``) for the NATS config.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bus.embedded import nats_server_binary
from bus.security import ROLES, password_variable
from cli.main import build_parser
from schemas.config import Settings, load_settings
from schemas.environment import PRINCIPAL_KEY_VARIABLE
from tests.conftest import toolbus

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "compose.yaml"
COMPOSE_SCHEMA = REPO.parent / "shared" / "data" / "compose-spec.json"
"""The official Compose JSON Schema; CI clones the repo with ../shared beside it."""
IMAGE_ROOT = Path("/app")
"""Where the Dockerfile puts the repo's examples/ and deploy/ in the image."""
CLUSTER_PORT = 6222


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def toolbus_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s.get("command", [None])[0] == "toolbus"}


def nats_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if str(s.get("image", "")).startswith("nats:")}


def mounted_file(compose: dict[str, Any], service: dict[str, Any], target: Path) -> Path:
    """The repo file that ``service`` sees at ``target``: a read-only bind mount ``./FILE:TARGET:ro``
    (not a top-level ``configs`` entry, which docker-compose 1.29 ignores outside swarm)."""
    for mount in service.get("volumes", []):
        source, _, rest = mount.partition(":")
        if source.startswith("./") and Path(rest.partition(":")[0]) == target:
            assert rest.endswith(":ro"), f"{mount}: mount configs read-only"
            return REPO / source
    raise AssertionError(f"nothing is mounted at {target}")


def service_settings(compose: dict[str, Any], service: dict[str, Any]) -> Settings:
    """The settings a toolbus service runs with, loaded from the repo file its ``--config`` names."""
    args = build_parser().parse_args(service["command"][1:])
    target = args.settings_file
    assert target is not None and target.is_absolute(), f"{service['command']}: give --config as an absolute path"
    source = mounted_file(compose, service, target)
    # The image holds the same file at the same place below /app, so relative paths in it (the
    # example components) resolve in the container as they do here.
    assert source == REPO / target.relative_to(IMAGE_ROOT), f"{target} is mounted from {source}"
    return load_settings(source)


def interpolated_variable(value: str) -> str:
    """``NAME`` of a ``${NAME:?message}`` value; Compose fills it in from .env."""
    match = re.fullmatch(r"\$\{([A-Z0-9_]+):\?[^}]+\}", value)
    assert match, f"{value!r} is not a required ${{VARIABLE:?message}}"
    return match.group(1)


def test_compose_yaml_is_valid_against_the_compose_schema(compose: dict[str, Any]) -> None:
    assert COMPOSE_SCHEMA.is_file(), f"{COMPOSE_SCHEMA} is missing: clone the shared data beside the repo"
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    # The schema says draft-07 in a spelling jsonschema does not recognise (no trailing "#").
    assert "draft-07" in schema["$schema"]
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, errors


def test_the_system_is_three_nats_nodes_a_registry_workers_and_a_gateway(services: dict[str, dict[str, Any]]) -> None:
    roles = {s["command"][1] for s in toolbus_services(services).values() if "profiles" not in s}
    assert roles == {"registry", "worker", "gateway"}
    assert len(nats_services(services)) == 3


def test_every_toolbus_command_parses_and_its_config_loads(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    parser = build_parser()
    for name, service in toolbus_services(services).items():
        settings = service_settings(compose, service)
        assert settings.source_file is not None, name
        health = service.get("healthcheck", {}).get("test", [])
        if health[1:2] == ["toolbus"]:  # a health probe that is a toolbus verb must parse too
            assert (
                parser.parse_args(health[2:]).settings_file == parser.parse_args(service["command"][1:]).settings_file
            )


def test_each_role_connects_as_its_own_user_to_every_node_with_r3(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    node_urls = {f"nats://{name}:4222" for name in nats_services(services)}
    for name, service in toolbus_services(services).items():
        settings = service_settings(compose, service)
        role = settings.nats.user
        assert role in ROLES, f"{name} connects as {role!r}"
        if "profiles" not in service:
            assert role == service["command"][1], f"{name} runs `{service['command'][1]}` as the {role!r} user"
        assert set(settings.nats.url.split(",")) == node_urls, name
        assert settings.nats.replicas == 3, f"{name}: JetStream replicas on a 3-node cluster"
        # The password given to the service is the one its user has in the NATS config.
        environment = service["environment"]
        assert interpolated_variable(environment["TOOLBUS_NATS_PASSWORD"]) == password_variable(role), name


def test_gateways_workers_and_the_registry_share_the_principal_key(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for role in ("registry", "worker", "gateway"):
        assert interpolated_variable(services[role]["environment"][PRINCIPAL_KEY_VARIABLE]) == PRINCIPAL_KEY_VARIABLE


def test_the_gateway_is_published_with_authentication_on(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    gateway = services["gateway"]
    settings = service_settings(compose, gateway)
    assert settings.auth is not None, "authentication must be on in compose"
    assert settings.gateway.host == "0.0.0.0"
    assert f"{settings.gateway.port}:{settings.gateway.port}" in gateway["ports"]
    assert settings.auth.resource == f"http://localhost:{settings.gateway.port}{settings.gateway.path}"
    assert f"127.0.0.1:{settings.gateway.port}/readyz" in " ".join(gateway["healthcheck"]["test"])


def test_workers_are_replicated(services: dict[str, dict[str, Any]]) -> None:
    assert services["worker"]["deploy"]["replicas"] >= 2


def test_every_dependency_exists_and_waits_for_health(services: dict[str, dict[str, Any]]) -> None:
    for name, service in toolbus_services(services).items():
        depends_on = service.get("depends_on", {})
        assert set(nats_services(services)) <= set(depends_on), f"{name} must wait for every NATS node"
        for dependency, how in depends_on.items():
            assert dependency in services, f"{name} depends on {dependency}, which is not a service"
            assert how["condition"] == "service_healthy", f"{name} -> {dependency}"
            assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health, it has no check"


def test_nats_nodes_have_health_checks_and_a_volume_each(services: dict[str, dict[str, Any]]) -> None:
    volumes = set()
    for name, service in nats_services(services).items():
        assert "/healthz" in " ".join(service["healthcheck"]["test"]), name
        (mount,) = [m for m in service["volumes"] if not m.startswith("./")]
        volume, path = mount.split(":")
        assert path == "/data", f"{name}: JetStream's store_dir is /data"
        volumes.add(volume)
    assert len(volumes) == 3, "each node keeps its own JetStream store"


def nats_config_args(services: dict[str, dict[str, Any]]) -> list[str]:
    """How deploy/nats/cluster.conf is generated (docs/deployment.md shows the command)."""
    routes = [arg for name in nats_services(services) for arg in ("--route", f"nats://{name}:{CLUSTER_PORT}")]
    return [
        "nats-config",
        *("--prefix", "toolbus", "--host", "0.0.0.0", "--http-port", "8222", "--store-dir", "/data"),
        *("--cluster-name", "toolbus", "--cluster-port", str(CLUSTER_PORT), *routes, "--passwords-from-env"),
    ]


def test_the_nats_config_is_what_toolbus_nats_config_generates(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    args = nats_config_args(services)
    generated = toolbus(*args)
    assert generated.returncode == 0, generated.stderr
    for service in nats_services(services).values():
        config = mounted_file(compose, service, Path(service["command"][1]))
        regenerate = f"toolbus {shlex.join(args)} > {config.relative_to(REPO)}"
        assert config.read_text(encoding="utf-8") == generated.stdout, f"stale; regenerate it: {regenerate}"


def test_nats_server_accepts_each_node_config_with_the_variables_compose_gives_it(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    for name, service in nats_services(services).items():
        variables = {key: interpolated_variable(value) for key, value in service["environment"].items()}
        assert variables == {password_variable(role): password_variable(role) for role in ROLES}, name
        config = mounted_file(compose, service, Path(service["command"][1]))
        argv = [str(nats_server_binary()), *service["command"], "-t"]
        argv[argv.index(service["command"][1])] = str(config)
        env = {"PATH": os.environ.get("PATH", ""), **{key: "not-a-secret" for key in variables}}
        checked = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=tmp_path, env=env, check=False)
        assert checked.returncode == 0, f"{name}: {checked.stderr}"
        assert "is valid" in checked.stderr
        # Every variable matters: without one, nats-server refuses the config.
        missing = dict(env)
        del missing[password_variable("worker")]
        refused = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, cwd=tmp_path, env=missing, check=False
        )
        assert refused.returncode != 0 and password_variable("worker") in refused.stderr


def test_every_secret_compose_reads_from_dot_env_is_documented(services: dict[str, dict[str, Any]]) -> None:
    deployment = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    variables = {
        interpolated_variable(value)
        for service in services.values()
        for value in service.get("environment", {}).values()
        if value.startswith("${")
    }
    assert variables == {*(password_variable(role) for role in ROLES), PRINCIPAL_KEY_VARIABLE}
    for variable in variables:
        assert variable in deployment, f"docs/deployment.md does not say how to set {variable}"


def dockerignore_allows(path: str) -> bool:
    """Whether .dockerignore (an allowlist: ``*`` then ``!path`` lines) lets ``path`` into the context."""
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    return "*" in lines and any(path == a or path.startswith(f"{a}/") for a in allowed)


def test_the_dockerfile_copies_what_exists_and_builds_the_compose_workers_components() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    copied = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    sources = [source for sources in copied if not sources[0].startswith("--") for source in sources]
    assert sources, "the Dockerfile copies nothing from the context"
    for source in sources:
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which is not in the repo"
        assert dockerignore_allows(source.rstrip("/")), f".dockerignore keeps {source} out of the build context"
    assert not dockerignore_allows(".env"), "the secrets must never enter the build context"
    built_from = re.search(r'load_settings\(Path\("(/app/[^"]+)"\)\)', dockerfile)
    assert built_from is not None
    worker_config = REPO / Path(built_from.group(1)).relative_to(IMAGE_ROOT)
    assert any(c.source is not None for c in load_settings(worker_config).components)


def test_compose_yaml_uses_nothing_docker_compose_1_29_refuses_or_ignores(compose: dict[str, Any]) -> None:
    # Debian's docker-compose 1.29 (what tests/deploy runs) refuses a top-level `name` and a
    # healthcheck's `start_interval`, and ignores top-level `configs` outside swarm: the nodes
    # then started without their config (found by the first real run).
    assert not {"name", "configs"} & set(compose), "docker-compose 1.29 refuses `name` and ignores `configs`"
    for name, service in compose["services"].items():
        assert "start_interval" not in service.get("healthcheck", {}), f"{name}: docker-compose 1.29 refuses it"
        assert "configs" not in service, f"{name}: bind-mount the file read-only instead"


def test_the_loopback_override_keeps_every_service_on_the_hosts_loopback(services: dict[str, dict[str, Any]]) -> None:
    override_file = REPO / "deploy" / "compose.loopback.yaml"
    override: dict[str, Any] = yaml.safe_load(override_file.read_text(encoding="utf-8"))
    assert set(override["services"]) == set(services), "every service runs on the host's network"
    for name, service in override["services"].items():
        assert service["network_mode"] == "host", name
        assert all(entry.endswith(":127.0.0.1") for entry in service["extra_hosts"]), name
    text = override_file.read_text(encoding="utf-8")
    addresses = set(re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text))
    assert addresses and all(a.startswith("127.") for a in addresses), addresses
