"""The one codec for the bus: JSON via msgspec, with typed decoders built once."""

from __future__ import annotations

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


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def decode(data: bytes, type_: type[T]) -> T:
    """Decode JSON bytes into ``type_`` (the typed decoder is built once per type).

    Raises:
        DecodeError: the bytes are not JSON or do not fit the type.
    """
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    result: T = decoder.decode(data)
    return result


def decode_json(data: bytes) -> Any:
    """Decode JSON bytes into plain Python values (for tool arguments, which are free-form)."""
    return _any_decoder.decode(data)
