"""``/readyz`` of a gateway whose config lists components: ready only once a live worker serves
each of them, whatever the tools bucket still holds from an earlier run."""

from __future__ import annotations

import httpx2
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.subjects import Subjects
from registry.service import RegistryService
from schemas.codec import encode
from schemas.config import RegistrySettings, load_settings
from tests.conftest import FAST_TASKS, TEST_ANNOUNCE_INTERVAL_S, TESTKIT_WAT, eventually, start_task_worker
from tests.gateway.responders import running_gateway
from workers.sandbox.component import LoadedComponent

READY_WITHIN_S = 30.0
"""Bounds the wait for a ready gateway (a generous bound, not a measured time)."""


async def test_a_tool_left_in_the_bucket_does_not_make_its_component_served(
    nats_server: EmbeddedNatsServer, nc: NatsClient, subjects: Subjects, kv: KeyValue, kit: LoadedComponent
) -> None:
    # What a `toolbus up` killed outright leaves behind: kit's tools in the bucket, no worker.
    for tool in kit.tools:
        await kv.put(tool.name, encode(tool))
    settings = load_settings(
        None,
        nats={"url": nats_server.url, "prefix": subjects.prefix},
        components=[{"name": "kit", "path": str(TESTKIT_WAT)}, {"name": "other", "path": str(TESTKIT_WAT)}],
    )
    async with running_gateway(settings) as gateway, httpx2.AsyncClient() as http:
        stale = await http.get(gateway.base_url + "/readyz")
        assert stale.status_code == 503
        body = stale.json()
        assert body["tools"] == len(kit.tools)  # listed: the mirror has them ...
        assert body["components"] == {"kit": "waiting", "other": "waiting"}  # ... but nobody serves them
        # /healthz says the same and stays 200: the gateway is alive.
        alive = await http.get(gateway.base_url + "/healthz")
        assert alive.status_code == 200 and alive.json()["components"] == body["components"]

        registry = RegistryService(
            nc, subjects, RegistrySettings(), announce_interval_s=TEST_ANNOUNCE_INTERVAL_S, tasks=FAST_TASKS
        )
        await registry.start()
        worker_nc = await connect(nats_server.url, name="readiness-worker")
        worker = await start_task_worker(worker_nc, subjects, [kit], FAST_TASKS)
        try:
            # kit is served now; `other` (no worker has it) keeps the gateway unready.
            async def kit_served() -> bool:
                body = (await http.get(gateway.base_url + "/readyz")).json()
                return bool(body["components"]["kit"] == "served")

            await eventually(kit_served, timeout_s=READY_WITHIN_S, interval_s=0.1, what="kit never served")
            partial = await http.get(gateway.base_url + "/readyz")
            assert partial.status_code == 503
            assert partial.json()["components"] == {"kit": "served", "other": "waiting"}
        finally:
            await worker.stop()
            await worker_nc.close()
            await registry.stop()


async def test_a_gateway_without_components_in_its_config_does_not_ask(
    nats_server: EmbeddedNatsServer, subjects: Subjects
) -> None:
    # No registry runs: a gateway with nothing to wait for is ready without one, as before.
    settings = load_settings(None, nats={"url": nats_server.url, "prefix": subjects.prefix})
    async with running_gateway(settings) as gateway, httpx2.AsyncClient() as http:
        ready = await http.get(gateway.base_url + "/readyz")
    assert ready.status_code == 200
    assert "components" not in ready.json()
