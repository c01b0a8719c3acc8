"""The NATS micro discovery replies (``$SRV.PING``/``INFO``/``STATS``), as frozen msgspec Structs.

The shapes are NATS's, not ours: they follow the micro protocol (``io.nats.micro.v1.*``) that
the nats CLI (``nats micro ls/info/stats``), nats.go's and nats-py's ``micro`` packages read.
Field names are the protocol's snake_case; every field is always written, as the reference
implementations do, so strict readers find every key they expect.
"""

from __future__ import annotations

import msgspec

PING_RESPONSE_TYPE = "io.nats.micro.v1.ping_response"
INFO_RESPONSE_TYPE = "io.nats.micro.v1.info_response"
STATS_RESPONSE_TYPE = "io.nats.micro.v1.stats_response"


class MicroPing(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=PING_RESPONSE_TYPE):
    """Reply to ``$SRV.PING``: who this service instance is."""

    name: str
    id: str
    version: str
    metadata: dict[str, str]


class MicroEndpointInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One endpoint in an INFO reply: for toolbus, one tool and its call subject."""

    name: str
    subject: str
    queue_group: str
    metadata: dict[str, str]


class MicroInfo(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=INFO_RESPONSE_TYPE):
    """Reply to ``$SRV.INFO``: the instance and its endpoints."""

    name: str
    id: str
    version: str
    metadata: dict[str, str]
    description: str
    endpoints: list[MicroEndpointInfo]


class ToolLoad(msgspec.Struct, frozen=True, kw_only=True):
    """toolbus's extra per-tool figures, carried in the free-form ``data`` of an endpoint's stats."""

    in_flight: int
    """Calls of this tool accepted and not yet answered."""
    tool_errors: int
    """Results with ``isError: true`` (guest ``err``, trap, timeout, invalid arguments)."""
    error_replies: int
    """Typed error replies (``Toolbus-Error``), including ``overloaded``."""
    overloaded: int
    """Calls refused at once because the worker was at capacity."""


class MicroEndpointStats(msgspec.Struct, frozen=True, kw_only=True):
    """One endpoint's counters in a STATS reply. Times are nanoseconds."""

    name: str
    subject: str
    queue_group: str
    num_requests: int
    num_errors: int
    last_error: str
    processing_time: int
    average_processing_time: int
    data: ToolLoad


class MicroStats(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=STATS_RESPONSE_TYPE):
    """Reply to ``$SRV.STATS``: counters of every endpoint since the instance started."""

    name: str
    id: str
    version: str
    metadata: dict[str, str]
    started: str
    """RFC 3339 UTC with microseconds, e.g. ``2025-01-31T12:00:00.000123Z``."""
    endpoints: list[MicroEndpointStats]
