"""The one codec for the bus: JSON via msgspec, with typed decoders built once."""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_any_decoder = msgspec.json.Decoder()

DecodeError = msgspec.DecodeError
"""Raised by ``decode`` when bytes are not valid JSON or do not match the type."""


def encode(value: Any) -> bytes:
    """Encode a wire Struct (or plain JSON value) to JSON bytes."""
    return _encoder.encode(value)


@cache
def _decoder(type_: type[T]) -> msgspec.json.Decoder[T]:
    return msgspec.json.Decoder(type_)


def decode(data: bytes, type_: type[T]) -> T:
    """Decode JSON bytes into ``type_``.

    Raises:
        DecodeError: the bytes are not JSON or do not fit the type.
    """
    return _decoder(type_).decode(data)


def decode_json(data: bytes) -> Any:
    """Decode JSON bytes into plain Python values (for tool arguments, which are free-form)."""
    return _any_decoder.decode(data)
