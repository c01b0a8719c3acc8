"""Claim checks (``bus.payloads``) under the generated per-role permissions of a real nats-server:
each role can do its part of a large call and nothing stops it half-way (a pull consumer to read,
a purge to delete), and a body over the cap is never stored. Large task arguments likewise."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.connection import connect
from bus.errors import PayloadGone, PayloadTooLarge
from bus.payloads import Payloads
from bus.subjects import Header, Subjects
from schemas.config import TasksSettings
from schemas.wire import TaskWork
from stores import TaskStore
from stores.task_store import arguments_object
from tests.bus.secure_nats import secure_nats

MIB = 1024 * 1024


async def test_each_role_does_its_part_of_a_large_call_under_its_own_permissions(tmp_path: Path) -> None:
    subjects = Subjects("claims")
    with secure_nats(tmp_path, subjects) as server:
        roles = {
            role: await connect(server.as_role(role), name=role)
            for role in ("registry", "gateway", "worker", "operator")
        }
        try:
            payloads = {role: Payloads(nc, subjects, max_bytes=8 * MIB) for role, nc in roles.items()}
            await payloads["registry"].bucket()  # its provisioner creates it
            arguments = b'{"name": "' + b"a" * (3 * MIB) + b'"}'
            result = b'{"content": "' + b"r" * (5 * MIB) + b'"}'

            # gateway → worker: the arguments; the worker deletes what it consumed.
            body, headers = await payloads["gateway"].offload(arguments, {Header.REQUEST_ID: "r1"})
            assert body == b"" and headers is not None and headers[Header.REQUEST_ID] == "r1"
            read, name = await payloads["worker"].claim(headers, body)
            assert read == arguments and name is not None
            await payloads["worker"].delete(name)
            with pytest.raises(PayloadGone):
                await payloads["gateway"].get(name)

            # worker → gateway: the result, deleted by the gateway.
            body, headers = await payloads["worker"].offload(result, None)
            read, name = await payloads["gateway"].claim(headers, body)
            assert read == result and name is not None
            await payloads["gateway"].delete(name)

            # a plain NATS user (operator) both ways; the registry reads a large task submit.
            name, digest = await payloads["operator"].put(arguments)
            assert await payloads["registry"].get(name, digest) == arguments
            assert await payloads["operator"].get(name) == arguments

            # a gateway queues a task with large arguments (kept beside its result); a worker reads them.
            await TaskStore.open(roles["registry"], subjects, TasksSettings())
            gateway_tasks = await TaskStore.open(roles["gateway"], subjects, TasksSettings())
            record = await gateway_tasks.submit("kit_greet", {"name": "t" * (2 * MIB)}, principal="p")
            worker_tasks = await TaskStore.open(roles["worker"], subjects, TasksSettings())
            work = TaskWork(
                task_id=record.task_id,
                tool="kit_greet",
                arguments={},
                arguments_object=arguments_object(record.task_id),
            )
            assert await worker_tasks.arguments(work) == {"name": "t" * (2 * MIB)}

            # small bodies travel inline, and a body over the cap is never stored.
            assert await payloads["gateway"].offload(b"{}", None) == (b"{}", None)
            with pytest.raises(PayloadTooLarge, match="max_payload_bytes"):
                await payloads["gateway"].offload(b"x" * (9 * MIB), None)
        finally:
            for nc in roles.values():
                await nc.close()
