"""Resource and prompt list changes reach clients in both eras (real NATS and gateway, the mcp
SDK's Client): a surface put into or deleted from the surfaces bucket is one notice per list."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from mcp import Client
from nats.aio.client import Client as NatsClient

from bus.provisioning import ensure_bucket
from bus.subjects import Subjects
from schemas.codec import encode
from schemas.wire import ComponentSurface, PromptDescriptor, ResourceDescriptor
from tests.gateway.responders import RunningGateway

StartGateway = Callable[..., Awaitable[RunningGateway]]


def surface(version: int) -> ComponentSurface:
    return ComponentSurface(
        component="docs",
        resources=[ResourceDescriptor(uri=f"docs://v{version}", name="readme")],
        prompts=[PromptDescriptor(name=f"docs_p{version}", guest_name=f"p{version}")],
    )


class Heard:
    def __init__(self) -> None:
        self.methods: list[str] = []
        self.event = asyncio.Event()

    async def handle(self, message: Any) -> None:
        if isinstance(message, types.ResourceListChangedNotification | types.PromptListChangedNotification):
            self.methods.append(message.method)
            self.event.set()


async def test_initialize_and_discover_advertise_resources_prompts_and_completions(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    for mode in ("legacy", "auto"):
        async with Client(gateway.url, mode=mode) as client:
            capabilities = client.server_capabilities
        assert capabilities.resources == types.ResourcesCapability(subscribe=True, list_changed=True), mode
        assert capabilities.prompts == types.PromptsCapability(list_changed=True), mode
        assert capabilities.completions is not None, mode


async def test_a_2025_session_hears_resources_and_prompts_change(
    start_gateway: StartGateway, nc: NatsClient, subjects: Subjects
) -> None:
    kv = await ensure_bucket(nc, subjects.surfaces_bucket)
    gateway = await start_gateway()
    heard = Heard()
    async with Client(gateway.url, mode="legacy", message_handler=heard.handle) as client:
        # The GET stream opens on its own after initialize; a notice before it is lost.
        for version in range(30):
            await kv.put("docs", encode(surface(version)))
            try:
                await asyncio.wait_for(heard.event.wait(), 0.5)
                break
            except TimeoutError:
                continue
        await asyncio.sleep(0.8)
        assert set(heard.methods) == {"notifications/resources/list_changed", "notifications/prompts/list_changed"}
        assert [p.name for p in (await client.list_prompts()).prompts] == [f"docs_p{version}"]


async def test_a_2026_listen_stream_hears_what_it_asked_for(
    start_gateway: StartGateway, nc: NatsClient, subjects: Subjects
) -> None:
    kv = await ensure_bucket(nc, subjects.surfaces_bucket)
    gateway = await start_gateway()
    async with Client(gateway.url, mode="auto") as client:
        async with client.listen(prompts_list_changed=True) as subscription:
            await kv.put("docs", encode(surface(1)))
            async with asyncio.timeout(5):
                async for event in subscription:
                    assert type(event).__name__ == "PromptsListChanged"
                    break
        assert [str(r.uri) for r in (await client.list_resources()).resources] == ["docs://v1"]
        await kv.delete("docs")
        await asyncio.sleep(0.8)
        assert (await client.list_resources()).resources == []
