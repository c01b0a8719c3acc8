"""The section headers of a Wasm binary (core module or component): what toolbus reads of one itself.

A binary is an 8-byte preamble (magic, version and layer) and then sections, each an id byte, its
size as an unsigned LEB128 and its payload. Two readers walk them without decoding code: the
sandbox, for start functions (``workers.sandbox.start_functions``), and the toolchains, for the
docs section they append (``workers.toolchains.wit_docs``), which is written here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

MAGIC: Final = b"\0asm"
PREAMBLE_BYTES: Final = 8
CUSTOM_SECTION_ID: Final = 0


def read_leb128(data: memoryview, offset: int) -> tuple[int, int]:
    """An unsigned LEB128 of at most 5 bytes (a u32) at ``offset``: its value and the offset after it.

    Raises:
        ValueError: it runs past ``data`` or past 5 bytes.
    """
    value = shift = 0
    for _ in range(5):
        if offset >= len(data):
            raise ValueError(f"LEB128 at byte {offset} runs past the end of the binary")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
    raise ValueError(f"LEB128 before byte {offset} is longer than a u32")


def sections(data: memoryview) -> Iterator[tuple[int, int, int]]:
    """``(id, start, end)`` of each top-level section of ``data``, a binary whose preamble the caller checked.

    Raises:
        ValueError: a section's header or size runs past the end of ``data``.
    """
    offset = PREAMBLE_BYTES
    while offset < len(data):
        section_id = data[offset]
        size, offset = read_leb128(data, offset + 1)
        end = offset + size
        if end > len(data):
            raise ValueError(f"section at byte {offset} runs past the end of the binary")
        yield section_id, offset, end
        offset = end


def custom_section(name: str, payload: bytes) -> bytes:
    """A custom section named ``name``; valid anywhere in a module or component, the end included."""
    encoded_name = name.encode()
    body = _encode_leb128(len(encoded_name)) + encoded_name + payload
    return bytes([CUSTOM_SECTION_ID]) + _encode_leb128(len(body)) + body


def find_custom_section(data: memoryview, name: str) -> memoryview | None:
    """The payload of the first top-level custom section named ``name`` in ``data``, or None.

    Raises:
        ValueError: ``data`` is not a Wasm binary, or a section runs past its end.
    """
    if len(data) < PREAMBLE_BYTES or bytes(data[:4]) != MAGIC:
        raise ValueError("not a Wasm binary (bad magic number)")
    wanted = name.encode()
    for section_id, start, end in sections(data):
        if section_id == CUSTOM_SECTION_ID:
            name_len, name_start = read_leb128(data, start)
            name_end = name_start + name_len
            if name_end > end:
                raise ValueError(f"custom section name at byte {name_start} runs past its section")
            if bytes(data[name_start:name_end]) == wanted:
                return data[name_end:end]
    return None


def _encode_leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)
