"""The section headers of a Wasm binary (core module or component): what toolbus reads of one itself.

A binary is an 8-byte preamble (magic, version and layer) and then sections, each an id byte, its
size as an unsigned LEB128 and its payload. Two readers walk them without decoding code: the
sandbox, for start functions (``workers.sandbox.start_functions``), and the toolchains, for the
docs section they append (``workers.toolchains.wit_docs``), which is written here too. The walk
reads a binary held in memory or, header by header, an open file: a loader whose compiled form
is cached finds an 18 MB component's docs without reading its code (issue 17's restart target).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import BinaryIO, Final

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
    return _walk(_memory_reader(data), len(data))


_HEADER_MAX_BYTES: Final = 6
"""A section header at its longest: the id byte and a 5-byte LEB128 size."""


def _walk(read_at: Callable[[int, int], memoryview], total: int) -> Iterator[tuple[int, int, int]]:
    """The sections of a binary of ``total`` bytes, whose bytes ``read_at(offset, size)`` gives."""
    offset = PREAMBLE_BYTES
    while offset < total:
        header = read_at(offset, _HEADER_MAX_BYTES)
        try:
            size, after = read_leb128(header, 1)
        except ValueError:  # its message counts from the header: name the binary's offset instead
            raise ValueError(
                f"section header at byte {offset}: its size runs past the end of the binary or past 5 bytes"
            ) from None
        start = offset + after
        end = start + size
        if end > total:
            raise ValueError(f"section at byte {start} runs past the end of the binary")
        yield header[0], start, end
        offset = end


def custom_section(name: str, payload: bytes) -> bytes:
    """A custom section named ``name``; valid anywhere in a module or component, the end included."""
    encoded_name = name.encode()
    body = _encode_leb128(len(encoded_name)) + encoded_name + payload
    return bytes([CUSTOM_SECTION_ID]) + _encode_leb128(len(body)) + body


def find_custom_section(data: memoryview | BinaryIO, name: str) -> bytes | None:
    """The payload of the first top-level custom section named ``name``, or None.

    ``data`` is the binary in memory or a file open for reading in binary mode; of a file, only the
    section headers, the custom sections' names and the payload found are read.

    Raises:
        ValueError: ``data`` is not a Wasm binary, or a section runs past its end.
        OSError: the file cannot be read.
    """
    if isinstance(data, memoryview):
        read_at = _memory_reader(data)
        total = len(data)
    else:
        read_at = _file_reader(data)
        total = os.fstat(data.fileno()).st_size
    if total < PREAMBLE_BYTES or bytes(read_at(0, 4)) != MAGIC:
        raise ValueError("not a Wasm binary (bad magic number)")
    wanted = name.encode()
    for section_id, start, end in _walk(read_at, total):
        if section_id == CUSTOM_SECTION_ID:
            # The name's length (a LEB128) and the name; longer names than ours cannot match.
            head = read_at(start, min(end - start, 5 + len(wanted)))
            try:
                name_len, name_at = read_leb128(head, 0)
            except ValueError:  # its message counts from the section: name the binary's offset
                raise ValueError(f"custom section at byte {start}: its name's length runs past its section") from None
            name_end = start + name_at + name_len
            if name_end > end:
                raise ValueError(f"custom section name at byte {start + name_at} runs past its section")
            if name_len == len(wanted) and bytes(head[name_at : name_at + name_len]) == wanted:
                return bytes(read_at(name_end, end - name_end))
    return None


def _memory_reader(data: memoryview) -> Callable[[int, int], memoryview]:
    return lambda offset, size: data[offset : offset + size]


def _file_reader(file: BinaryIO) -> Callable[[int, int], memoryview]:
    def read_at(offset: int, size: int) -> memoryview:
        file.seek(offset)
        return memoryview(file.read(size))

    return read_at


def _encode_leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)
