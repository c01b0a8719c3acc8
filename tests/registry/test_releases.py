"""Publishing, versions, aliases and hot swap against a real nats-server, a real registry and
real workers (wasmtime) that follow the packages bucket."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import wasmtime
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.registry_requests import RegistryRefused
from bus.registry_requests import release as request_release
from bus.subjects import Subjects
from registry.service import RegistryService
from schemas.codec import decode, encode
from schemas.config import RegistrySettings, WorkerSettings
from schemas.errors import ErrorCode
from schemas.wire import ErrorReply, PublishRequest, RegistryEvent
from tests.conftest import answer_component, eventually, nats_settings, toolbus
from tests.registry.conftest import ANNOUNCE_INTERVAL_S, Deployment, OciTestRegistry
from workers.sandbox.component import LoadedComponent
from workers.service import WorkerService

SETTLE_TIMEOUT_S = 15.0
"""How long a release may take to reach the catalogue and the workers."""


V1 = answer_component(1, extra_export="legacy")
V2 = answer_component(2, extra_export="fresh")


async def test_publish_serves_the_new_tools_at_their_version(deployment: Deployment) -> None:
    await deployment.start_worker()
    events = await deployment.nc.subscribe(deployment.subjects.events_any)
    reply = await deployment.publish("pkg", "1.0.0", V1, source="v1.wasm")
    assert reply.message == "published pkg 1.0.0"
    [summary] = reply.versions
    assert (summary.version, summary.aliases, summary.tools) == ("1.0.0", ["latest"], ["pkg_answer", "pkg_legacy"])
    await eventually(
        lambda: deployment.offered() == {"pkg_answer": "1.0.0", "pkg_legacy": "1.0.0"}, timeout_s=SETTLE_TIMEOUT_S
    )
    assert (await deployment.call("pkg_answer")).structured_content == 1
    event = decode((await events.next_msg(timeout=5)).data, RegistryEvent)
    assert (event.kind, event.name, event.version, event.tools) == (
        "published",
        "pkg",
        "1.0.0",
        ["pkg_answer", "pkg_legacy"],
    )


async def test_versions_are_immutable_and_republishing_the_same_bytes_is_harmless(deployment: Deployment) -> None:
    await deployment.start_worker()
    await deployment.publish("pkg", "1.0.0", V1)
    again = await deployment.publish("pkg", "1.0.0", V1)
    assert again.message == "pkg 1.0.0 was already published"
    with pytest.raises(RegistryRefused, match=r"pkg 1\.0\.0 is already published with sha256:.*versions are immutable"):
        await deployment.publish("pkg", "1.0.0", V2)


@pytest.mark.parametrize(
    ("name", "version", "message"),
    [
        ("pkg", "1.0", "version '1.0' is not a semantic version"),
        ("no.dots", "1.0.0", "package name 'no.dots' must be"),
    ],
)
async def test_bad_names_and_versions_are_refused(
    deployment: Deployment, name: str, version: str, message: str
) -> None:
    with pytest.raises(RegistryRefused, match=message):
        await deployment.publish(name, version, V1)


async def test_a_publish_naming_no_artifact_is_refused(deployment: Deployment) -> None:
    request = PublishRequest(name="pkg", version="1.0.0")  # neither a digest nor an oci reference
    with pytest.raises(RegistryRefused, match="name the artifact: a digest in the artifact store, or an oci://"):
        await request_release(deployment.nc, deployment.subjects.registry_release("publish"), encode(request))


async def test_publishing_needs_a_worker_to_check_the_component(deployment: Deployment) -> None:
    with pytest.raises(RegistryRefused, match="no worker is running to load and check the component"):
        await deployment.publish("pkg", "1.0.0", V1)


async def test_a_component_that_cannot_load_is_refused_and_nothing_is_recorded(deployment: Deployment) -> None:
    await deployment.start_worker()
    broken = bytes(wasmtime.wat2wasm('(component (import "foo:bar/baz" (instance)))'))
    with pytest.raises(RegistryRefused, match=r"publish: component 'pkg' exports no function usable as a tool"):
        await deployment.publish("pkg", "1.0.0", broken)
    assert (await deployment.release("versions", "pkg")).versions == []


async def test_a_new_version_swaps_in_under_load_with_zero_failed_calls(deployment: Deployment) -> None:
    await deployment.start_worker()
    await deployment.start_worker()
    await deployment.publish("pkg", "1.0.0", V1)
    await eventually(lambda: "pkg_answer" in deployment.offered(), timeout_s=SETTLE_TIMEOUT_S)
    answers: list[int] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def caller() -> None:
        while not stop.is_set():
            try:
                result = await deployment.call("pkg_answer")
            except Exception as exc:
                failures.append(repr(exc))
                continue
            if result.is_error:
                failures.append(str(result))
            else:
                answers.append(int(result.structured_content))  # type: ignore[call-overload]

    callers = [asyncio.create_task(caller()) for _ in range(20)]
    await eventually(lambda: len(answers) >= 100, timeout_s=SETTLE_TIMEOUT_S)
    await deployment.publish("pkg", "2.0.0", V2)
    await eventually(lambda: answers[-40:] == [2] * 40, timeout_s=SETTLE_TIMEOUT_S)
    await eventually(
        lambda: deployment.offered() == {"pkg_answer": "2.0.0", "pkg_fresh": "2.0.0"}, timeout_s=SETTLE_TIMEOUT_S
    )
    stop.set()
    await asyncio.gather(*callers)
    assert failures == []
    assert answers[0] == 1 and set(answers) == {1, 2}
    # Every answer came from version 1 or version 2 (the order is not checked: a call may
    # still get 1 after another got 2, while the workers swap one by one).
    assert answers.count(1) + answers.count(2) == len(answers)


async def test_rollback_deprecate_and_retire(deployment: Deployment) -> None:
    _, follower, _ = await deployment.start_worker()
    await deployment.publish("pkg", "1.0.0", V1)
    await deployment.publish("pkg", "2.0.0", V2)
    await eventually(lambda: deployment.offered().get("pkg_answer") == "2.0.0", timeout_s=SETTLE_TIMEOUT_S)

    reply = await deployment.release("rollback", "pkg", "1.0.0")
    assert reply.message == "pkg latest → 1.0.0"
    assert {v.version: v.aliases for v in reply.versions} == {"1.0.0": ["latest"], "2.0.0": []}
    await eventually(
        lambda: deployment.offered() == {"pkg_answer": "1.0.0", "pkg_legacy": "1.0.0"}, timeout_s=SETTLE_TIMEOUT_S
    )
    assert (await deployment.call("pkg_answer")).structured_content == 1

    await deployment.release("deprecate", "pkg", "1.0.0", reason="use 2.0.0")
    assert deployment.registry.catalogue is not None
    await eventually(
        lambda: (
            deployment.registry.catalogue is not None
            and deployment.registry.catalogue.tools["pkg_answer"].description.startswith("DEPRECATED: use 2.0.0.")
        ),
        timeout_s=SETTLE_TIMEOUT_S,
    )

    reply = await deployment.release("retire", "pkg", "1.0.0")
    assert {v.version: (v.aliases, v.retired) for v in reply.versions} == {
        "1.0.0": ([], True),
        "2.0.0": (["latest"], False),
    }
    await eventually(
        lambda: deployment.offered() == {"pkg_answer": "2.0.0", "pkg_fresh": "2.0.0"}, timeout_s=SETTLE_TIMEOUT_S
    )
    with pytest.raises(RegistryRefused, match=r"pkg 1\.0\.0 is retired"):
        await deployment.release("rollback", "pkg", "1.0.0")

    await deployment.release("retire", "pkg")
    await eventually(lambda: deployment.offered() == {}, timeout_s=SETTLE_TIMEOUT_S)
    # The catalogue drops it at once; the worker unsubscribes when it sees the alias go.
    await eventually(lambda: follower.serving == {}, timeout_s=SETTLE_TIMEOUT_S)

    async def answered_no_worker() -> bool:
        try:
            reply_msg = await deployment.nc.request(deployment.subjects.call("pkg_answer"), b"{}", timeout=5)
        except NoRespondersError:
            return False  # the registry stands in for the tool from its next reconciliation on
        return reply_msg.headers is not None and decode(reply_msg.data, ErrorReply).error.code == ErrorCode.NO_WORKER

    await eventually(answered_no_worker, timeout_s=SETTLE_TIMEOUT_S, what="the registry never stood in for pkg_answer")


async def test_a_tool_leaves_the_catalogue_when_its_only_worker_dies(deployment: Deployment) -> None:
    _, _, worker_nc = await deployment.start_worker()
    await deployment.publish("pkg", "1.0.0", V1)
    await eventually(lambda: "pkg_answer" in deployment.offered(), timeout_s=SETTLE_TIMEOUT_S)
    started = time.monotonic()
    await worker_nc.close()  # as a kill -9 looks to NATS: the connection is gone, no goodbye
    await eventually(lambda: "pkg_answer" not in deployment.offered(), timeout_s=5)
    assert time.monotonic() - started < 3 * ANNOUNCE_INTERVAL_S + 1
    reply = await deployment.nc.request(deployment.subjects.call("pkg_answer"), b"{}", timeout=5)
    assert decode(reply.data, ErrorReply).error.code == ErrorCode.NO_WORKER


async def test_a_worker_started_later_serves_what_was_published(deployment: Deployment) -> None:
    await deployment.start_worker()
    await deployment.publish("pkg", "1.0.0", V1)
    _, follower, _ = await deployment.start_worker()
    assert follower.serving == {"pkg": "1.0.0"}


async def test_a_restarted_registry_offers_the_same_catalogue_at_once(
    deployment: Deployment, nc: NatsClient, subjects: Subjects
) -> None:
    await deployment.start_worker()
    await deployment.publish("pkg", "1.0.0", V1)
    await eventually(lambda: "pkg_answer" in deployment.offered(), timeout_s=SETTLE_TIMEOUT_S)
    second = RegistryService(nc, subjects, RegistrySettings(), announce_interval_s=ANNOUNCE_INTERVAL_S)
    await second.start()
    try:
        assert second.catalogue is not None
        assert {n: t.version for n, t in second.catalogue.tools.items()} == deployment.offered()
    finally:
        await second.stop()


async def test_the_cli_publishes_a_file_and_an_oci_artifact_and_manages_versions(
    deployment: Deployment, nats_server: EmbeddedNatsServer, oci_registry: OciTestRegistry, tmp_path: Path
) -> None:
    await deployment.start_worker()
    prefix = nats_settings(tmp_path, nats_server.url, deployment.subjects.prefix)
    wasm = tmp_path / "answer.wasm"
    wasm.write_bytes(V1)
    tool_toml = tmp_path / "tool.toml"
    tool_toml.write_text('description = "Answers."\nlimits = { timeout_s = 2 }\n')

    done = await asyncio.to_thread(
        toolbus, "publish", str(wasm), "--name", "pkg", "--version", "1.0.0", "--tool-config", str(tool_toml),
        "--config", str(prefix),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "published pkg 1.0.0" in done.stdout

    oci_registry.push("tools/answer:2.0.0", V2)
    done = await asyncio.to_thread(
        toolbus, "publish", oci_registry.oci("tools/answer:2.0.0"), "--name", "pkg", "--version", "2.0.0",
        "--config", str(prefix),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    await eventually(
        lambda: deployment.offered() == {"pkg_answer": "2.0.0", "pkg_fresh": "2.0.0"}, timeout_s=SETTLE_TIMEOUT_S
    )
    assert (await deployment.call("pkg_answer")).structured_content == 2
    [v1, v2] = (await deployment.release("versions", "pkg")).versions
    assert (v1.version, v2.version, v2.aliases) == ("1.0.0", "2.0.0", ["latest"])
    record = await deployment.store.version("pkg", "1.0.0")
    assert record is not None and record.settings == {"description": "Answers.", "limits": {"timeout_s": 2}}

    done = await asyncio.to_thread(toolbus, "rollback", "pkg", "1.0.0", "--config", str(prefix))
    assert done.returncode == 0, done.stderr
    assert "pkg latest → 1.0.0" in done.stdout
    await eventually(lambda: deployment.offered().get("pkg_answer") == "1.0.0", timeout_s=SETTLE_TIMEOUT_S)
    assert deployment.registry.catalogue is not None
    assert deployment.registry.catalogue.tools["pkg_answer"].description == "Answers."

    done = await asyncio.to_thread(toolbus, "tools", "--config", str(prefix))
    assert done.returncode == 0, done.stderr
    [row] = [line for line in done.stdout.splitlines() if line.startswith("pkg_answer")]
    assert row.split()[:4] == ["pkg_answer", "1.0.0", f"sha256:{v1.digest[7:19]}", "1"]
    # The same listing for scripts, with the global options before the verb this time.
    done = await asyncio.to_thread(toolbus, "--config", str(prefix), "tools", "--json")
    assert done.returncode == 0, done.stderr
    [listed] = [tool for tool in json.loads(done.stdout) if tool["name"] == "pkg_answer"]
    assert (listed["version"], listed["digest"], listed["liveWorkers"]) == ("1.0.0", v1.digest, 1)
    done = await asyncio.to_thread(toolbus, "versions", "pkg", "--json", "--config", str(prefix))
    assert done.returncode == 0, done.stderr
    assert [v["version"] for v in json.loads(done.stdout)["versions"]] == ["1.0.0", "2.0.0"]

    missing = tmp_path / "missing.toml"
    done = await asyncio.to_thread(toolbus, "publish", str(wasm), "--name", "pkg", "--version", "1.0.0",
                                   "--config", str(prefix), "--tool-config", str(missing))  # fmt: skip
    assert done.returncode == 1 and "missing.toml" in done.stderr


async def test_publishing_under_a_configured_components_name_is_refused(
    deployment: Deployment, nats_server: EmbeddedNatsServer, kit: LoadedComponent, tmp_path: Path
) -> None:
    await deployment.start_worker()  # follows packages and loads what is published
    # A worker serving the testkit from its own config: component "kit", tools kit_*.
    worker_nc = await connect(nats_server.url, name="configured-worker")
    settings = WorkerSettings(announce_interval_s=ANNOUNCE_INTERVAL_S)
    service = WorkerService(worker_nc, deployment.subjects, settings, [kit])
    await service.start()
    try:
        await eventually(lambda: "kit_add" in deployment.offered(), timeout_s=SETTLE_TIMEOUT_S)
        wasm = tmp_path / "answer.wasm"
        wasm.write_bytes(V1)
        prefix = nats_settings(tmp_path, nats_server.url, deployment.subjects.prefix)
        refused = await asyncio.to_thread(
            toolbus, "publish", str(wasm), "--name", "kit", "--version", "1.0.0", "--config", str(prefix)
        )
        assert refused.returncode == 1
        assert "'kit' is a component workers serve from their own config" in refused.stderr
        assert "kit_add" in refused.stderr and "--name" in refused.stderr
        assert await deployment.store.version("kit", "1.0.0") is None
        assert deployment.offered()["kit_add"] == ""  # still the configured tool
        done = await asyncio.to_thread(
            toolbus, "publish", str(wasm), "--name", "kit2", "--version", "1.0.0", "--config", str(prefix)
        )
        assert done.returncode == 0, done.stderr
    finally:
        await service.stop(grace_s=0.5)
        await worker_nc.close()


async def test_workers_joining_and_leaving_are_events(deployment: Deployment) -> None:
    events = await deployment.nc.subscribe(deployment.subjects.events_any)
    service, _, worker_nc = await deployment.start_worker()
    joined = decode((await events.next_msg(timeout=5)).data, RegistryEvent)
    assert (joined.kind, joined.worker_id) == ("worker_joined", service.worker_id)
    await worker_nc.close()
    left = decode((await events.next_msg(timeout=5)).data, RegistryEvent)
    assert (left.kind, left.worker_id) == ("worker_left", service.worker_id)
