"""Whether instantiating a component can run its own code: does it have a start function anywhere?

Instantiation runs guest code only through start functions: a core module's ``start`` section or a
component's (the component-model ``start`` section); the rest of it (memories, tables, data and
element segments, wiring imports to exports) is wasmtime's own bounded work. A component with no
start function anywhere can therefore be instantiated while the caller keeps the GIL
(``LoadedComponent``): nothing it does can spin, and the epoch ticker, a Python thread, is not
needed to stop it. Any doubt (a binary this walk does not understand) answers "it can".

The walk reads section headers only (an id byte and a LEB128 size), descending into the core
modules and nested components a component embeds; it never decodes code.
"""

from __future__ import annotations

from typing import Final

from workers.wasm_sections import MAGIC, PREAMBLE_BYTES, sections

_CORE_VERSION: Final = b"\x01\x00\x00\x00"
"""A core module's version and layer fields; a component's are ``0d 00 01 00``."""
_CORE_START: Final = 8
_COMPONENT_CORE_MODULE: Final = 1
_COMPONENT_NESTED: Final = 4
_COMPONENT_START: Final = 9
_MAX_DEPTH: Final = 32
"""Nesting deeper than this is answered "it can" (no real component nests that far)."""


def may_run_code_at_instantiation(wasm: bytes) -> bool:
    """True unless ``wasm`` (a component or core module binary) surely has no start function."""
    try:
        return _has_start(memoryview(wasm), 0)
    except (IndexError, ValueError):
        return True


def _has_start(data: memoryview, depth: int) -> bool:
    if depth > _MAX_DEPTH or len(data) < PREAMBLE_BYTES or bytes(data[:4]) != MAGIC:
        raise ValueError("not a Wasm binary this walk understands")
    component = bytes(data[4:8]) != _CORE_VERSION
    for section_id, start, end in sections(data):
        if component:
            if section_id == _COMPONENT_START:
                return True
            if section_id in (_COMPONENT_CORE_MODULE, _COMPONENT_NESTED) and _has_start(data[start:end], depth + 1):
                return True
        elif section_id == _CORE_START:
            return True
    return False
