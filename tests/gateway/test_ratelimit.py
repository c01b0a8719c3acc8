"""Rate limits against a real nats-server: two limiters on two connections (two gateway replicas)
share one limit through the KV bucket; per-principal and per-tool limits are independent; the
window resets; Retry-After is the rest of the window; the bucket unreachable falls back as
configured."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.js.errors import BucketNotFoundError

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.subjects import Subjects
from gateway.ratelimit import LEASE_DIVISOR, STORE_RETRY_S, RateLimiter, retry_after_header
from schemas.config import RateLimitSettings
from tests.conftest import steady_rate_window


@pytest.fixture
async def other_nc(nats_server: EmbeddedNatsServer) -> AsyncIterator[NatsClient]:
    """The second replica's own connection."""
    client = await connect(nats_server.url, name="replica-2")
    yield client
    await client.close()


@pytest.fixture(autouse=True)
async def steady_window() -> None:
    """Every test here counts in 600 s windows: none may straddle a window's end."""
    await steady_rate_window(600.0)


def limits(**settings: Any) -> RateLimitSettings:
    return RateLimitSettings.model_validate(settings)


async def allowed(limiter: RateLimiter, principal: str, tool: str | None, times: int) -> int:
    """How many of ``times`` sequential checks were allowed."""
    return sum([await limiter.check(principal, tool) is None for _ in range(times)])


async def test_two_replicas_share_one_limit(nc: NatsClient, other_nc: NatsClient, subjects: Subjects) -> None:
    settings = limits(per_principal={"requests": 100, "per_s": 600})
    one = await RateLimiter.open(nc, subjects, settings)
    two = await RateLimiter.open(other_nc, subjects, settings)
    # 150 calls on each replica at once: the compare-and-set races are real.
    answers = await asyncio.gather(*(r.check("alice", "kit_add") for _ in range(150) for r in (one, two)))
    admitted = sum(a is None for a in answers)
    # Never over the limit; short of it by at most the lease the other replica still holds.
    assert 100 - math.ceil(100 / LEASE_DIVISOR) <= admitted <= 100
    assert all(0 < a <= 600 for a in answers if a is not None)
    # Sequential, alternating replicas: the same total.
    three = await RateLimiter.open(nc, subjects, limits(per_principal={"requests": 10, "per_s": 600}))
    four = await RateLimiter.open(other_nc, subjects, limits(per_principal={"requests": 10, "per_s": 600}))
    counts = [await r.check("bob", None) is None for _ in range(15) for r in (three, four)]
    assert 10 - math.ceil(10 / LEASE_DIVISOR) <= sum(counts) <= 10
    assert counts[:8] == [True] * 8  # the first calls are never refused while tokens are left


async def test_per_principal_and_per_tool_limits_are_independent(nc: NatsClient, subjects: Subjects) -> None:
    limiter = await RateLimiter.open(
        nc, subjects, limits(per_principal={"requests": 5, "per_s": 600}, per_tool={"requests": 2, "per_s": 600})
    )
    assert await allowed(limiter, "carol", "a", 3) == 2  # the per-tool limit
    assert await allowed(limiter, "carol", "b", 3) == 2  # another tool has its own; the refusal above took nothing
    assert await allowed(limiter, "carol", "c", 3) == 1  # the principal's 5 are used up
    assert await limiter.check("carol", None) is not None
    assert await allowed(limiter, "dave", "a", 3) == 2, "one principal's limit does not touch another's"


async def test_a_tool_override_replaces_the_per_tool_limit(nc: NatsClient, subjects: Subjects) -> None:
    settings = limits(per_tool={"requests": 3, "per_s": 600}, tools={"kit_burn": {"requests": 1, "per_s": 600}})
    limiter = await RateLimiter.open(nc, subjects, settings)
    assert await allowed(limiter, "erin", "kit_burn", 3) == 1
    assert await allowed(limiter, "erin", "kit_add", 5) == 3
    assert await allowed(limiter, "erin", "not a tool.name", 5) == 3  # any name a client sends is counted


async def test_the_window_resets_and_retry_after_says_when(nc: NatsClient, subjects: Subjects) -> None:
    limiter = await RateLimiter.open(nc, subjects, limits(per_tool={"requests": 2, "per_s": 1}))
    # Start just after a window begins so the two calls fall into one window.
    await asyncio.sleep(1 - time.time() % 1 + 0.01)
    assert await allowed(limiter, "frank", "kit_add", 2) == 2
    retry_after = await limiter.check("frank", "kit_add")
    assert retry_after is not None and 0 < retry_after <= 1
    await asyncio.sleep(retry_after + 0.02)
    assert await limiter.check("frank", "kit_add") is None, "a new window allows calls again"


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after_header(0.001) == "1"
    assert retry_after_header(1.0) == "1"
    assert retry_after_header(59.2) == "60"


async def test_no_limit_set_allows_everything_without_a_bucket(nc: NatsClient, subjects: Subjects) -> None:
    limiter = await RateLimiter.open(nc, subjects, RateLimitSettings())
    assert not limiter.enabled
    assert await allowed(limiter, "gina", "kit_add", 50) == 50
    with pytest.raises(BucketNotFoundError):
        await nc.jetstream().key_value(subjects.rate_limits_bucket)


async def test_bucket_gone_counts_locally_by_default(nc: NatsClient, subjects: Subjects) -> None:
    limiter = await RateLimiter.open(nc, subjects, limits(per_principal={"requests": 4, "per_s": 600}))
    assert await allowed(limiter, "hal", None, 1) == 1  # leased from KV: ceil(4/8) = 1 token
    await nc.jetstream().delete_key_value(subjects.rate_limits_bucket)
    # Each replica now enforces the whole limit alone (4 here, on top of what KV granted).
    assert await allowed(limiter, "hal", None, 6) == 4
    assert limiter.store_failures == 1, "the bucket is not asked again on every call"


async def test_bucket_unreachable_denies_when_configured(nc: NatsClient, subjects: Subjects) -> None:
    settings = limits(per_principal={"requests": 4, "per_s": 600}, on_store_error="deny")
    limiter = await RateLimiter.open(nc, subjects, settings)
    await nc.jetstream().delete_key_value(subjects.rate_limits_bucket)
    assert await limiter.check("ivan", None) == STORE_RETRY_S
    assert await limiter.check("ivan", None) == STORE_RETRY_S


async def test_a_closed_connection_falls_back_at_once(nats_server: EmbeddedNatsServer, subjects: Subjects) -> None:
    closed = await connect(nats_server.url, name="closing")
    limiter = await RateLimiter.open(closed, subjects, limits(per_principal={"requests": 2, "per_s": 600}))
    await closed.close()
    assert await allowed(limiter, "judy", None, 3) == 2  # counted locally, no wait for a timeout


def test_config_refuses_nonsense_and_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"per_tool\.requests"):
        RateLimitSettings.model_validate({"per_tool": {"requests": 0}})
    with pytest.raises(ValueError, match=r"per_principal\.per_s"):
        RateLimitSettings.model_validate({"per_principal": {"requests": 1, "per_s": 86_401}})
    assert not RateLimitSettings().enabled
    assert RateLimitSettings.model_validate({"tools": {"kit_burn": {"requests": 1}}}).enabled
