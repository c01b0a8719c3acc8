"""Typed error replies: the body and the header that mark a reply as an error."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient

from bus.subjects import Header
from schemas.codec import encode
from schemas.errors import ErrorCode
from schemas.wire import ErrorBody, ErrorReply

MESSAGE_MAX_CHARS = 1024
"""An error message is cut to this: messages quote what the caller sent (a tool's name, a bad
field), and one quoting a request of the bus's maximum size would not fit in a reply (nats-py
refuses it, and the caller waits out its timeout instead of hearing the error)."""


def error_reply(code: ErrorCode, message: str, capabilities: list[str] | None = None) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a typed error reply with ``code`` (``capabilities``: the missing ones)."""
    if len(message) > MESSAGE_MAX_CHARS:
        message = f"{message[:MESSAGE_MAX_CHARS]}… ({len(message) - MESSAGE_MAX_CHARS} characters cut)"
    body = ErrorReply(
        ErrorBody(code=int(code), message=message, retryable=code.retryable, capabilities=capabilities or [])
    )
    return encode(body), {Header.ERROR: str(int(code))}


async def send_error(nc: NatsClient, reply_to: str, code: ErrorCode, message: str) -> None:
    """Publish a typed error reply to ``reply_to``."""
    body, headers = error_reply(code, message)
    await nc.publish(reply_to, body, headers=headers)
