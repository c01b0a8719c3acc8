"""NATS micro discovery for a worker: answer ``$SRV.PING``/``INFO``/``STATS`` with its tools.

A worker is one instance of the micro service ``toolbus-worker``; each of its tools is an
endpoint whose subject is the tool's call subject and whose queue group is the workers' queue
group. The call subscriptions themselves stay the worker's own (``workers.service``): nats-py's
``nats.micro`` times only the awaited handler and counts only exceptions, while a worker
answers later from a guest thread and reports failures as replies. So this module keeps the
per-tool counters (``ToolStats``, updated by the service on the event loop) and answers the
three discovery verbs in nats.micro's exact JSON shapes (``schemas.micro``).
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Final

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.connection import unsubscribe_quietly
from bus.errors import ConnectionClosed, nats_boundary
from bus.subjects import MICRO_VERBS, micro_control
from schemas.codec import encode
from schemas.micro import MicroEndpointInfo, MicroEndpointStats, MicroInfo, MicroPing, MicroStats, ToolLoad

log = structlog.get_logger(__name__)

SERVICE_NAME: Final = "toolbus-worker"
"""The micro service name every worker registers under (``nats micro info toolbus-worker``)."""
SERVICE_DESCRIPTION: Final = "toolbus Wasm worker: one endpoint per tool it serves"
LAST_ERROR_CHARS: Final = 200
"""``last_error`` is a hint for an operator, not a log: long guest messages are cut."""


def _package_version() -> str:
    try:
        return importlib.metadata.version("toolbus")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree without install
        return "0.0.0"


SERVICE_VERSION: Final = _package_version()


class ToolStats:
    """Counters of one tool's calls on this worker; touched only on the event loop, so no lock."""

    __slots__ = (
        "completed",
        "error_replies",
        "errors",
        "in_flight",
        "last_error",
        "overloaded",
        "processing_ns",
        "requests",
        "tool_errors",
    )

    def __init__(self) -> None:
        self.requests = 0
        """Calls received (counted on arrival)."""
        self.completed = 0
        """Calls answered; the average processing time is over these."""
        self.in_flight = 0
        self.errors = 0
        self.tool_errors = 0
        self.error_replies = 0
        self.overloaded = 0
        self.processing_ns = 0
        self.last_error = ""

    def succeeded(self, started_ns: int) -> None:
        """Count a call answered with a successful result."""
        self.completed += 1
        self.processing_ns += time.perf_counter_ns() - started_ns

    def failed(self, started_ns: int, message: str, *, typed: bool) -> None:
        """Count a call answered with a typed error (``typed``) or an ``isError`` result."""
        self.completed += 1
        self.processing_ns += time.perf_counter_ns() - started_ns
        self.errors += 1
        if typed:
            self.error_replies += 1
        else:
            self.tool_errors += 1
        self.last_error = message[:LAST_ERROR_CHARS]


class Discovery:
    """Answers the micro discovery requests for one worker until stopped."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        instance_id: str,
        metadata: Mapping[str, str],
        endpoints: Mapping[str, tuple[str, str]],
        stats: Mapping[str, ToolStats],
    ) -> None:
        """``endpoints`` maps each tool to its (call subject, queue group); ``stats`` to its counters."""
        self._nc = nc
        self._id = instance_id
        self._metadata = dict(metadata)
        self._started = datetime.now(UTC)
        # PING never changes while the worker runs, INFO only when its tools do: encode them once.
        self._ping = encode(
            MicroPing(name=SERVICE_NAME, id=instance_id, version=SERVICE_VERSION, metadata=self._metadata)
        )
        self.update(endpoints, stats)
        self._subscriptions: list[Subscription] = []

    def update(self, endpoints: Mapping[str, tuple[str, str]], stats: Mapping[str, ToolStats]) -> None:
        """Describe a new set of tools (a package version was swapped in or out)."""
        self._stats = stats
        self._endpoints = [
            MicroEndpointInfo(name=tool, subject=subject, queue_group=queue, metadata={})
            for tool, (subject, queue) in endpoints.items()
        ]
        self._info = encode(
            MicroInfo(
                name=SERVICE_NAME,
                id=self._id,
                version=SERVICE_VERSION,
                metadata=self._metadata,
                description=SERVICE_DESCRIPTION,
                endpoints=self._endpoints,
            )
        )

    async def start(self) -> None:
        """Subscribe to every discovery subject this instance answers (all, by name, by id)."""
        for verb in MICRO_VERBS:
            for subject in (
                micro_control(verb),
                micro_control(verb, SERVICE_NAME),
                micro_control(verb, SERVICE_NAME, self._id),
            ):
                self._subscriptions.append(await self._nc.subscribe(subject, cb=self._handler(verb)))

    async def stop(self) -> None:
        """Stop answering: a stopped or draining worker is no longer discoverable."""
        subscriptions, self._subscriptions = self._subscriptions, []
        for sub in subscriptions:
            await unsubscribe_quietly(sub)

    def stats(self) -> MicroStats:
        """The STATS reply as of now."""
        endpoints = []
        for info in self._endpoints:
            tool = self._stats[info.name]
            endpoints.append(
                MicroEndpointStats(
                    name=info.name,
                    subject=info.subject,
                    queue_group=info.queue_group,
                    num_requests=tool.requests,
                    num_errors=tool.errors,
                    last_error=tool.last_error,
                    processing_time=tool.processing_ns,
                    average_processing_time=tool.processing_ns // tool.completed if tool.completed else 0,
                    data=ToolLoad(
                        in_flight=tool.in_flight,
                        tool_errors=tool.tool_errors,
                        error_replies=tool.error_replies,
                        overloaded=tool.overloaded,
                    ),
                )
            )
        return MicroStats(
            name=SERVICE_NAME,
            id=self._id,
            version=SERVICE_VERSION,
            metadata=self._metadata,
            # Always with microseconds: nats-py's reader parses exactly this format.
            started=self._started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            endpoints=endpoints,
        )

    def _handler(self, verb: str) -> Callable[[Msg], Awaitable[None]]:
        return {"PING": self._on_ping, "INFO": self._on_info, "STATS": self._on_stats}[verb]

    async def _on_ping(self, msg: Msg) -> None:
        await self._respond(msg, self._ping)

    async def _on_info(self, msg: Msg) -> None:
        await self._respond(msg, self._info)

    async def _on_stats(self, msg: Msg) -> None:
        await self._respond(msg, encode(self.stats()))

    async def _respond(self, msg: Msg, body: bytes) -> None:
        if not msg.reply:
            return
        try:
            with nats_boundary:
                await self._nc.publish(msg.reply, body)
        except ConnectionClosed:
            log.warning("discovery reply lost: connection closed")
