"""Each role can do exactly what its row of ``bus.permissions`` says, against a real nats-server.

The walk: for every core subject and every JetStream stream of the catalogue, each role tries
every act (publish, subscribe; read, write, administer) on a concrete subject, and the server's
permission errors are compared with the table — an act the table allows must pass, every other
must be refused. Then the attacks of the issue, with real JetStream clients: a worker reading
the audit stream or another role's bucket.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.errors
import pytest

from bus.connection import connect
from bus.permissions import ROLES, StoreRow, core_rows, markdown_table, store_rows
from bus.provisioning import ensure_bucket, ensure_object_store
from bus.subjects import Subjects
from registry.audit_stream import ensure_audit_stream
from schemas.config import TasksSettings
from stores import TaskStore
from tests.bus.secure_nats import API_TIMEOUT_S, SecureServer, permission_errors, secure_nats

SUBJECTS = Subjects("walk")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"


@pytest.fixture(scope="module")
def walk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    with secure_nats(tmp_path_factory.mktemp("walk-nats"), SUBJECTS) as server:
        yield server


@pytest.fixture(scope="module")
async def provisioned(walk_server: SecureServer) -> AsyncIterator[SecureServer]:
    """Every stream of the catalogue exists, each created by a role that may create it."""
    registry = await connect(walk_server.as_role("registry"), name="registry")
    gateway = await connect(walk_server.as_role("gateway"), name="gateway")
    try:
        await TaskStore.open(registry, SUBJECTS, TasksSettings())
        await ensure_audit_stream(registry, SUBJECTS)
        for bucket in (SUBJECTS.tools_bucket, SUBJECTS.packages_bucket, SUBJECTS.views_bucket):
            await ensure_bucket(registry, bucket)
        await ensure_object_store(registry, SUBJECTS.artifacts_store)
        await ensure_object_store(registry, SUBJECTS.payloads_store)
        await ensure_bucket(registry, SUBJECTS.rate_limits_bucket)
        audit = await gateway.jetstream().publish(SUBJECTS.audit_call("kit_add"), b'{"secret":"arguments"}')
        assert audit.stream == SUBJECTS.audit_stream
    finally:
        await gateway.close()
        await registry.close()
    yield walk_server


def example(subject: str) -> str:
    """A concrete subject that the permission subject ``subject`` matches."""
    return subject.replace("*", "probe").replace(">", "probe")


def store_probes(row: StoreRow) -> dict[str, list[str]]:
    """Subjects each act on a stream publishes to. Read and admin requests are sent without a
    reply subject or with a body the server rejects, so an allowed probe changes nothing."""
    stream = row.stream
    return {
        "r": [
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}.probe.probe",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.probe",
            f"$JS.API.DIRECT.GET.{stream}",
            f"$JS.API.STREAM.MSG.GET.{stream}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.probe",
        ],
        "w": [example(subject) for subject in row.writes],
        # A create of an existing stream with another config is refused by the server: no change.
        "a": [f"$JS.API.STREAM.CREATE.{stream}", f"$JS.API.STREAM.MSG.DELETE.{stream}"],
        # Nobody: changing a stream's subjects or sources reads the whole account (bus.permissions).
        "never": [f"$JS.API.STREAM.UPDATE.{stream}", f"$JS.API.STREAM.DELETE.{stream}"],
    }


async def refused_subjects(server: SecureServer, role: str, publish: list[str], subscribe: list[str]) -> set[str]:
    """``act subject`` for each of ``publish`` and ``subscribe`` the server refuses ``role``."""
    refused = set()
    for error in await permission_errors(server, role, publish, subscribe):
        match = re.search(r'permissions violation for (publish|subscription) to "([^"]+)"', error, re.IGNORECASE)
        assert match, error
        refused.add(f"{'publish' if match.group(1).lower() == 'publish' else 'subscribe'} {match.group(2)}")
    return refused


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_can_do_exactly_what_its_row_says(provisioned: SecureServer, role: str) -> None:
    publish: list[str] = []
    subscribe: list[str] = []
    expected_refusals: set[str] = set()
    for row in core_rows(SUBJECTS):
        subject = example(row.subject)
        publish.append(subject)
        subscribe.append(subject)
        for act, letter in (("publish", "p"), ("subscribe", "s")):
            if not row.allows(role, letter):
                expected_refusals.add(f"{act} {subject}")
    for store in store_rows(SUBJECTS):
        for letter, subjects in store_probes(store).items():
            publish += subjects
            if letter == "never" or not store.allows(role, letter):
                expected_refusals |= {f"publish {subject}" for subject in subjects}
    refused = await refused_subjects(provisioned, role, publish, subscribe)
    nats_lowercases = {s.lower() for s in expected_refusals}
    assert {s.lower() for s in refused} == nats_lowercases, (
        f"allowed but refused: {sorted({s.lower() for s in refused} - nats_lowercases)}; "
        f"refused by the table but allowed: {sorted(nats_lowercases - {s.lower() for s in refused})}"
    )


async def test_the_walk_covers_every_role_of_every_row() -> None:
    # A row nobody may use, or a role with no row at all, would be a sign the table went stale.
    for row in [*core_rows(SUBJECTS), *store_rows(SUBJECTS)]:
        assert row.access and set(row.access) <= set(ROLES), row
    used = {role for row in [*core_rows(SUBJECTS), *store_rows(SUBJECTS)] for role in row.access}
    assert used == set(ROLES)


@pytest.mark.parametrize("role", ["worker", "gateway"])
async def test_only_the_operator_reads_the_audit_stream(provisioned: SecureServer, role: str) -> None:
    nc = await connect(provisioned.as_role(role), name=role, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=API_TIMEOUT_S)
        with pytest.raises(nats.errors.TimeoutError):  # refused: the server never answers
            await js.subscribe(SUBJECTS.audit_any, stream=SUBJECTS.audit_stream)
        with pytest.raises(nats.errors.TimeoutError):
            await js.get_last_msg(SUBJECTS.audit_stream, SUBJECTS.audit_call("kit_add"))
        with pytest.raises(nats.errors.TimeoutError):
            await js.add_consumer(SUBJECTS.audit_stream, durable_name="stolen")
    finally:
        await nc.close()
    operator = await connect(provisioned.as_role("operator"), name="operator", allow_reconnect=False)
    try:
        js = operator.jetstream(timeout=API_TIMEOUT_S)
        event = await js.get_last_msg(SUBJECTS.audit_stream, SUBJECTS.audit_call("kit_add"))
        assert event.data == b'{"secret":"arguments"}'
    finally:
        await operator.close()


@pytest.mark.parametrize(
    ("role", "bucket"),
    [
        ("worker", SUBJECTS.tools_bucket),  # the gateway's and registry's catalogue
        ("worker", SUBJECTS.rate_limits_bucket),  # the gateway's
        ("gateway", SUBJECTS.packages_bucket),  # the registry's releases
        ("operator", SUBJECTS.rate_limits_bucket),
    ],
)
async def test_a_role_cannot_read_another_roles_bucket(provisioned: SecureServer, role: str, bucket: str) -> None:
    nc = await connect(provisioned.as_role(role), name=role, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=API_TIMEOUT_S)
        with pytest.raises(nats.errors.TimeoutError):
            await js.key_value(bucket)
        with pytest.raises(nats.errors.TimeoutError):
            await js.subscribe(f"$KV.{bucket}.>", stream=f"KV_{bucket}")
    finally:
        await nc.close()


async def test_the_gateway_writes_tasks_but_cannot_read_the_work_queue(provisioned: SecureServer) -> None:
    nc = await connect(provisioned.as_role("gateway"), name="gateway", allow_reconnect=False)
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await nc.jetstream(timeout=API_TIMEOUT_S).pull_subscribe(
                SUBJECTS.task_work("kit_add"), "stolen", stream=SUBJECTS.tasks_stream
            )
    finally:
        await nc.close()


def test_docs_security_holds_the_generated_table() -> None:
    generated = markdown_table(Subjects())
    assert generated in DOCS.read_text(encoding="utf-8"), (
        "docs/security.md's role table is stale; paste the output of `toolbus nats-config --table`"
    )


async def test_the_gateway_sends_the_consoles_release_verbs_but_cannot_publish(provisioned: SecureServer) -> None:
    # The gateway faces the internet; its NATS user was widened for the console's rollback,
    # deprecate, retire and versions. Publish names any oci:// reference for the registry to pull
    # and workers to run: with it, a compromised gateway would run code of its choosing.
    verbs = ("publish", "rollback", "deprecate", "retire", "versions")
    refused = await refused_subjects(provisioned, "gateway", [SUBJECTS.registry_release(v) for v in verbs], [])
    assert refused == {f"publish {SUBJECTS.registry_release('publish')}"}
