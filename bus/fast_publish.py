"""Publishing a message with headers, its header block encoded here: nats-py's ``publish`` minus
its per-value ``str.translate``. The one place that reaches into nats-py's publish internals.

nats-py (2.16.0) encodes the headers of every publish itself: per header a ``strip``, a regular
expression over the name, and ``value.strip().translate(table)`` with a dict table — a Python
call per character of every value, the largest part of the 6.8% of the gateway's CPU per call
that header encoding took (issue 17; a call carries 3 to 5 headers). Here a name is checked once
(our names are constants) and a value is searched for CR/LF, replaced only when it has them;
the block is byte for byte what nats-py would send (``tests/bus/test_fast_publish.py`` checks
it against nats-py's own publish and pins the version). The rest of ``publish`` — the checks
in the same order with the same nats-py errors, the counters, the write and the flush — is
nats-py's, called through its private names. ``publish_now`` is the same publish for a caller on
the event loop that must not wait (a worker's replies): it fills nats-py's buffer and wakes its
flusher, as ``publish`` does, without a coroutine. What would make this public upstream: a
``publish`` that takes a pre-encoded header block, a cheaper newline check in nats-py, and a
synchronous ``publish_nowait``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Final

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.protocol.command import hpub_cmd, pub_cmd

NATS_PY_VERSION: Final = "2.16.0"
"""The nats-py whose internals this mirrors (a test fails on any other)."""

_HEADER_KEY: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""nats-py's rule for a header name (``_HEADER_KEY_RE``)."""
_SUBJECT_INVALID: Final = re.compile(r"[ \t\r\n]")
"""nats-py's rule for a published subject (``_SUBJECT_INVALID_RE``): no whitespace, no CR/LF."""
_HEADER_LINE: Final = b"NATS/1.0\r\n"
_CHECKED_NAMES_MAX: Final = 256
"""Names remembered as valid: ours are a handful; a caller inventing names gets them checked each time."""

_checked_names: set[str] = set()


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """The header block nats-py would send for ``headers`` (names trimmed and checked, values
    trimmed, CR and LF in a value turned into spaces so it cannot end its line).

    Raises:
        nats.errors.BadHeaderError: a name nats-py would refuse.
    """
    lines = [_HEADER_LINE]
    for name, value in headers.items():
        key = name.strip()
        if not key:
            continue  # nats-py skips empty names
        if key not in _checked_names:
            if not _HEADER_KEY.fullmatch(key):
                raise nats.errors.BadHeaderError(key)
            if len(_checked_names) < _CHECKED_NAMES_MAX:
                _checked_names.add(key)
        text = value.strip()
        if "\r" in text or "\n" in text:
            text = text.replace("\r", " ").replace("\n", " ")
        lines.append(f"{key}: {text}\r\n".encode())
    lines.append(b"\r\n")
    return b"".join(lines)


async def publish(nc: NatsClient, subject: str, payload: bytes, *, reply: str, headers: Mapping[str, str]) -> None:
    """``nc.publish(subject, payload, reply=reply, headers=headers)``, the same checks and errors.

    Raises:
        nats.errors.Error: as ``nc.publish`` (bad subject or header, closed, draining, buffer full,
            payload too large); callers translate them with ``bus.errors.nats_boundary``.
    """
    command = _command(nc, subject, payload, reply, headers)
    _count(nc, payload)
    await nc._send_command(command)
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


def publish_now(
    nc: NatsClient, subject: str, payload: bytes, *, reply: str = "", headers: Mapping[str, str] | None = None
) -> bool:
    """``publish`` without waiting: queue the message for nats-py's flusher task and wake it.

    For a caller that would otherwise hand each message to a task of its own (a worker's replies,
    ``workers.outbox``): the message is in nats-py's buffer when this returns, in call order, and
    the flusher writes every message queued meanwhile at its next turn. Returns False, and queues
    nothing, when the buffer holds more than nats-py allows (only while reconnecting, or with the
    socket far behind): the caller then publishes with ``nc.publish``, which waits for room.

    Raises:
        nats.errors.Error: as ``nc.publish``.
    """
    command = _command(nc, subject, payload, reply, headers)
    size = len(command)
    if nc._max_pending_size > 0 and nc._pending_data_size + size > nc._max_pending_size:
        return False
    _count(nc, payload)
    nc._pending.append(command)
    nc._pending_data_size += size
    flush_queue = nc._flush_queue
    # nats-py's _flush_pending minus its await: nothing to wake while disconnected (the reconnect
    # writes the buffer) or when a wake-up is already queued; the queue (1,024) is never full then.
    if nc.is_connected and flush_queue is not None and flush_queue.empty():
        flush_queue.put_nowait(asyncio.get_running_loop().create_future())
    return True


def _command(nc: NatsClient, subject: str, payload: bytes, reply: str, headers: Mapping[str, str] | None) -> bytes:
    """The PUB/HPUB command for a message, after nats-py's checks in nats-py's order."""
    if not nc._skip_subject_validation:
        if not subject or _SUBJECT_INVALID.search(subject):
            raise nats.errors.BadSubjectError
        if reply and _SUBJECT_INVALID.search(reply):
            raise nats.errors.BadSubjectError
    if nc.is_closed:
        raise nats.errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise nats.errors.ConnectionDrainingError
    size = len(payload)
    if not nc.is_connected and (nc._max_pending_size <= 0 or size + nc._pending_data_size > nc._max_pending_size):
        raise nats.errors.OutboundBufferLimitError  # reconnecting, and the buffer cannot take it
    if size > nc._max_payload:
        raise nats.errors.MaxPayloadError
    if headers is None:
        return pub_cmd(subject, reply, payload)
    block = encode_headers(headers)
    if size + len(block) > nc._max_payload:
        # nats-py checks the body alone; the server counts the headers too, and closes the
        # connection of a client that sends more (every request in flight on it lost).
        raise nats.errors.MaxPayloadError
    return hpub_cmd(subject, reply, block, payload)


def _count(nc: NatsClient, payload: bytes) -> None:
    nc.stats["out_msgs"] += 1
    nc.stats["out_bytes"] += len(payload)
