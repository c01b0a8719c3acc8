"""Call rate limits per principal and per (principal, tool), shared by every gateway replica.

A limit allows ``requests`` calls in each fixed window of ``per_s`` seconds (windows are
aligned to the unix epoch, so every replica agrees on them as far as their clocks agree).
``RateLimiter.check(principal, tool)`` answers ``None`` (allowed) or the seconds until the
window ends; the authentication front answers 429 with ``Retry-After: retry_after_header(s)``.

**Shared counts, leased.** Each limit of each principal (and tool) is one key of the KV bucket
``PREFIX_ratelimits``: ``RateWindow(window, used)``. A replica does not ask the bucket on every
call: it *leases* tokens, raising ``used`` by ``ceil(free / LEASE_DIVISOR)`` with one
compare-and-set, and spends them locally until the lease is gone. So:

- the total admitted in a window never exceeds the limit: every token was reserved in KV, by a
  compare-and-set, before it was spent;
- the total can fall *short*: tokens another replica leased but has not spent when this one is
  refused. Each replica holds at most one lease per key, and a lease is at most
  ``ceil(limit / LEASE_DIVISOR)``, so with R replicas at least
  ``limit - (R - 1) * ceil(limit / LEASE_DIVISOR)`` calls are admitted when demand exceeds the
  limit (limit 100, 2 replicas: at least 87; limit 10: at least 8);
- a call costs a KV round trip (~0.3-0.5 ms, ``bench/audit_costs.py``) only when its replica's
  lease for that key is empty; otherwise a few microseconds. Small limits lease one token at a
  time, so each of their calls pays the round trip;
- once the bucket says a window is used up, the replica refuses locally until the window ends.

Clocks: with replicas whose clocks differ by d seconds, window boundaries differ by d; a replica
whose clock is behind counts into the newer window it finds in KV.

**The bucket unreachable** (NATS down, JetStream not answering within ``store_timeout_s``): with
``on_store_error = "local"`` (the default) each replica counts alone, with the full limit, until
the bucket answers again (it is tried again after ``STORE_RETRY_S``), so the total can reach
replicas x limit; with ``"deny"`` every call is refused (``Retry-After`` ``STORE_RETRY_S``).
The default keeps tools available when the bus's storage is in trouble (calls themselves need
only core NATS); ``deny`` is for deployments where a limit is a hard contract.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Final

import structlog
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from bus.errors import BusError, KeyNotFound, WrongLastSequence, nats_boundary
from bus.provisioning import ensure_bucket
from bus.subjects import Subjects, is_valid_tool_name
from schemas.codec import DecodeError, decode, encode
from schemas.config import MAX_RATE_WINDOW_S, RateLimit, RateLimitSettings
from schemas.wire import RateWindow

log = structlog.get_logger(__name__)

LEASE_DIVISOR: Final = 8
"""A lease takes this fraction of what is left in the window (at least one token)."""
MAX_CAS_ATTEMPTS: Final = 8
"""Compare-and-set retries when other replicas write the same key at once."""
STORE_RETRY_S: Final = 1.0
"""After the bucket failed, it is not asked again for this long (calls do not queue behind a timeout)."""
CONTENDED_RETRY_S: Final = 0.05
"""A call refused because other replicas kept winning the race for its counter may retry at once
(``Retry-After`` says 1 s, its smallest value)."""
SWEEP_EVERY: Final = 4096
"""Checks between sweeps of the counters of windows that have ended."""


class _Contended:
    """Other replicas won every compare-and-set on a counter: refuse this call, count nothing."""


CONTENDED: Final = _Contended()


def retry_after_header(seconds: float) -> str:
    """The ``Retry-After`` value for a wait of ``seconds``: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


@dataclass(eq=False)
class _Counter:
    """One limit of one principal (and tool) on this replica, for one window."""

    window: int
    ends_at: float
    """Unix time the window ends."""
    leased: int = 0
    """Tokens reserved in KV and not spent yet."""
    full: bool = False
    """The bucket said this window is used up."""
    local_used: int = 0
    """Calls counted here alone while the bucket is unreachable."""
    revision: int = 0
    """Last known KV revision of the key (0: not known, or no key)."""
    stored: RateWindow | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class StoreUnavailable(Exception):
    """Raised when the KV bucket of the counts cannot be read or written (in this module only)."""


class RateLimiter:
    """Checks calls against ``[rate_limits]``; ``kv`` is None when no limit is set."""

    def __init__(self, kv: KeyValue | None, settings: RateLimitSettings, nc: NatsClient | None = None) -> None:
        self.settings = settings
        self.enabled = settings.enabled and kv is not None
        self._kv = kv
        self._nc = nc
        self._counters: dict[str, _Counter] = {}
        self._checks = 0
        self._store_down_until = 0.0
        self.store_failures = 0
        """KV operations that failed (each one sends the limiter to ``on_store_error`` for a while)."""
        self.contended = 0
        """Calls refused because other replicas won every compare-and-set on their counter."""

    @classmethod
    async def open(
        cls, nc: NatsClient, subjects: Subjects, settings: RateLimitSettings, *, replicas: int = 1
    ) -> RateLimiter:
        """A limiter for ``settings``; creates the counts bucket if a limit is set and it is missing."""
        if not settings.enabled:
            return cls(None, settings)
        bucket = subjects.rate_limits_bucket
        # Keys idle for the longest window are gone: a key written inside a window outlives it.
        await ensure_bucket(nc, bucket, replicas=replicas, ttl_s=MAX_RATE_WINDOW_S)
        kv = await nc.jetstream(timeout=settings.store_timeout_s).key_value(bucket)
        return cls(kv, settings, nc)

    def limits(self, tool: str | None) -> list[tuple[str, RateLimit]]:
        """The limits a call of ``tool`` counts against: (key kind, limit), the narrowest first."""
        found: list[tuple[str, RateLimit]] = []
        if tool is not None:
            per_tool = self.settings.tools.get(tool, self.settings.per_tool)
            if per_tool is not None:
                found.append(("t", per_tool))
        if self.settings.per_principal is not None:
            found.append(("p", self.settings.per_principal))
        return found

    async def check(self, principal: str, tool: str | None) -> float | None:
        """Count one call of ``principal`` to ``tool`` (None: a request that is no tool call).

        Returns None when it is allowed, else the seconds until a retry can succeed (the call is
        then not counted against any limit).
        """
        if not self.enabled:
            return None
        now = time.time()
        self._checks += 1
        if self._checks % SWEEP_EVERY == 0:
            self._sweep(now)
        who = hashlib.blake2b(principal.encode(), digest_size=12).hexdigest()
        taken: list[tuple[_Counter, bool]] = []  # (counter, leased rather than counted locally)
        for kind, limit in self.limits(tool):
            key = f"{kind}.{who}.{_tool_key(tool)}" if kind == "t" else f"{kind}.{who}"
            counter = self._counter(key, limit, now)
            took = await self._take(key, counter, limit)
            if took is None:
                if self.settings.on_store_error == "deny":
                    refused: float | None = STORE_RETRY_S
                elif counter.local_used < limit.requests:
                    counter.local_used += 1
                    taken.append((counter, False))
                    refused = None
                else:
                    refused = counter.ends_at - now
            elif took is CONTENDED:
                refused = CONTENDED_RETRY_S
            else:
                refused = None if took else counter.ends_at - now
                if took:
                    taken.append((counter, True))
            if refused is not None:
                for held, leased in taken:  # not counted: give back what the wider limits took
                    if leased:
                        held.leased += 1
                    else:
                        held.local_used -= 1
                return max(refused, 0.001)
        return None

    def _counter(self, key: str, limit: RateLimit, now: float) -> _Counter:
        window = int(now // limit.per_s)
        counter = self._counters.get(key)
        if counter is None or counter.window != window:
            previous = counter
            counter = _Counter(window, (window + 1) * limit.per_s)
            if previous is not None:  # the key's last known revision saves a read
                counter.revision, counter.stored = previous.revision, previous.stored
            self._counters[key] = counter
        return counter

    async def _take(self, key: str, counter: _Counter, limit: RateLimit) -> bool | _Contended | None:
        """True: one token spent; False: the window is used up; ``CONTENDED``: other replicas kept
        winning the race for the key; None: the bucket is unreachable."""
        if counter.leased > 0:
            counter.leased -= 1
            return True
        if counter.full:
            return False
        async with counter.lock:
            if counter.leased > 0:  # another call refilled the lease while this one waited
                counter.leased -= 1
                return True
            if counter.full:
                return False
            if time.monotonic() < self._store_down_until or (self._nc is not None and not self._nc.is_connected):
                return None
            try:
                granted = await self._reserve(key, counter, limit)
            except StoreUnavailable as exc:
                self.store_failures += 1
                self._store_down_until = time.monotonic() + STORE_RETRY_S
                log.warning("rate-limit counts unreachable", error=str(exc), fallback=self.settings.on_store_error)
                return None
            if isinstance(granted, _Contended):
                return granted
            if granted == 0:
                counter.full = True
                return False
            counter.leased += granted - 1
            return True

    async def _reserve(self, key: str, counter: _Counter, limit: RateLimit) -> int | _Contended:
        """Lease tokens of ``counter``'s window from KV (compare-and-set); 0 when none is left;
        ``CONTENDED`` when other replicas won every attempt (the bucket answers: it is busy, not
        down, so the call is refused rather than counted locally, which could exceed the limit).

        Raises:
            StoreUnavailable: the bucket did not answer.
        """
        assert self._kv is not None
        try:
            for _ in range(MAX_CAS_ATTEMPTS):
                stored = counter.stored
                used = stored.used if stored is not None and stored.window >= counter.window else 0
                window = max(counter.window, stored.window) if stored is not None else counter.window
                free = limit.requests - used
                if free <= 0:
                    if counter.revision:  # the cached value may be stale: read before refusing
                        fresh = await self._read(key)
                        if fresh != (counter.revision, counter.stored):
                            counter.revision, counter.stored = fresh
                            continue
                    return 0
                lease = min(free, math.ceil(free / LEASE_DIVISOR))
                value = RateWindow(window, used + lease)
                try:
                    with nats_boundary:
                        counter.revision = await self._kv.update(key, encode(value), last=counter.revision)
                except WrongLastSequence:  # another replica wrote first: read and try again
                    counter.revision, counter.stored = await self._read(key)
                    continue
                counter.stored = value
                return lease
        except BusError as exc:
            raise StoreUnavailable(repr(exc)) from exc
        self.contended += 1
        return CONTENDED

    async def _read(self, key: str) -> tuple[int, RateWindow | None]:
        assert self._kv is not None
        try:
            with nats_boundary:
                entry = await self._kv.get(key)
        except KeyNotFound:
            return 0, None
        try:
            return entry.revision or 0, decode(entry.value or b"", RateWindow)
        except DecodeError:
            return entry.revision or 0, None  # not ours: overwritten by the next lease

    def _sweep(self, now: float) -> None:
        """Forget counters of windows that have ended (leases in them are worthless)."""
        for key in [k for k, c in self._counters.items() if c.ends_at < now and not c.lock.locked()]:
            del self._counters[key]


def _tool_key(tool: str | None) -> str:
    """A KV key token for ``tool``: the name when it is a valid tool name, else a hash of it."""
    if tool is not None and is_valid_tool_name(tool):
        return tool
    return "h-" + hashlib.blake2b((tool or "").encode(), digest_size=8).hexdigest()
