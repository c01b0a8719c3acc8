"""Resources and prompts in the registry's catalogue (real nats-server): announced with the tools,
kept in the surfaces bucket while a live worker serves them, withdrawn when none does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
from nats.aio.client import Client as NatsClient

from bus.provisioning import ensure_bucket
from bus.subjects import Subjects
from registry.service import RegistryService
from schemas.codec import decode, encode
from schemas.config import RegistrySettings
from schemas.wire import (
    ComponentSurface,
    PromptDescriptor,
    ResourceDescriptor,
    ToolDescriptor,
    WorkerAnnouncement,
)
from tests.conftest import eventually

TOOL = ToolDescriptor(name="docs_search", input_schema={"type": "object"}, component="docs", export="search")
SURFACE = ComponentSurface(
    component="docs",
    resources=[ResourceDescriptor(uri="docs://readme", name="readme")],
    prompts=[PromptDescriptor(name="docs_summarise", guest_name="summarise")],
)


@pytest.fixture
async def registry(nc: NatsClient, subjects: Subjects) -> AsyncIterator[RegistryService]:
    service = RegistryService(nc, subjects, RegistrySettings(), announce_interval_s=0.2)
    await service.start()
    yield service
    await service.stop()


async def announce(nc: NatsClient, subjects: Subjects, state: str = "ready", **fields: object) -> None:
    announcement = WorkerAnnouncement(worker_id="w1", tools=[TOOL], state=state, **fields)  # type: ignore[arg-type]
    await nc.publish(subjects.announce, encode(announcement))
    await nc.flush()


async def test_announced_surfaces_land_in_kv_and_leave_with_their_worker(
    nc: NatsClient, subjects: Subjects, registry: RegistryService
) -> None:
    kv = await ensure_bucket(nc, subjects.surfaces_bucket)
    await announce(nc, subjects, surfaces=[SURFACE])
    catalogue = registry.catalogue
    assert catalogue is not None and catalogue.surfaces is not None
    surfaces = catalogue.surfaces
    await eventually(lambda: "docs" in surfaces.surfaces)
    assert decode((await kv.get("docs")).value or b"", ComponentSurface) == SURFACE

    await announce(nc, subjects, state="stopped", surfaces=[SURFACE])
    await eventually(lambda: "docs" not in surfaces.surfaces)  # deleted from the bucket (the watch saw it)


async def test_a_worker_that_stops_announcing_a_surface_withdraws_it(
    nc: NatsClient, subjects: Subjects, registry: RegistryService
) -> None:
    await announce(nc, subjects, surfaces=[SURFACE])
    assert registry.catalogue is not None and registry.catalogue.surfaces is not None
    surfaces = registry.catalogue.surfaces
    await eventually(lambda: "docs" in surfaces.surfaces)
    await eventually(lambda: registry.catalogue is not None and registry.catalogue.may_remove)
    await announce(nc, subjects)  # the same worker, its component no longer serving resources
    await eventually(lambda: "docs" not in surfaces.surfaces)


async def test_a_published_package_s_surface_is_offered_only_at_its_latest_version(
    nc: NatsClient, subjects: Subjects, registry: RegistryService
) -> None:
    stale = msgspec.structs.replace(SURFACE, component="pkg", version="1.0.0")
    await announce(nc, subjects, surfaces=[SURFACE, stale])
    catalogue = registry.catalogue
    assert catalogue is not None and catalogue.surfaces is not None
    surfaces = catalogue.surfaces
    await eventually(lambda: "docs" in surfaces.surfaces)
    assert "pkg" not in surfaces.surfaces  # no `latest` alias points at 1.0.0
