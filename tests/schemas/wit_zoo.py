"""Test helper: a component whose exports cover every WIT value type (the "type zoo").

Each ``echo-<name>`` function returns its argument through the canonical ABI: sixteen u64
padding parameters force the arguments into linear memory, and the core function hands the
same pointer back as the ``tuple<T, u64>`` result, whose memory layout starts with ``T``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import wasmtime
from wasmtime import component as wc

TYPES: dict[str, str] = {
    "bool": "bool",
    "s8": "s8",
    "s16": "s16",
    "s32": "s32",
    "s64": "s64",
    "u8": "u8",
    "u16": "u16",
    "u32": "u32",
    "u64": "u64",
    "f32": "f32",
    "f64": "f64",
    "char": "char",
    "string": "string",
    "bytes": "(list u8)",
    "strings": "(list string)",
    "point": "$point",
    "pair": "(tuple u8 string)",
    "color": "$color",
    "perms": "$perms",
    "shape": "$shape",
    "either": "$either",
    "opt-u32": "(option u32)",
    "opt-string": "(option string)",
    "opt-opt": "(option (option u32))",
    "res-f64-string": "(result f64 (error string))",
    "res-string-string": "(result string (error string))",
    "res-unit-string": "(result (error string))",
    "res-u32-unit": "(result u32)",
    "res-unit-unit": "(result)",
    "nested": "(list (option $point))",
}

NAMED_TYPES = """
  (type $color' (enum "red" "green-blue"))
  (export $color "color" (type $color'))
  (type $perms' (flags "read" "write" "exec-all"))
  (export $perms "perms" (type $perms'))
  (type $point' (record (field "x-pos" f64) (field "label" string) (field "tags" (list string))
                        (field "color" $color) (field "limit" (option u32))))
  (export $point "point" (type $point'))
  (type $shape' (variant (case "circle" f64) (case "label" string) (case "empty")))
  (export $shape "shape" (type $shape'))
  (type $either' (variant (case "left" u32) (case "right" u32) (case "neither")))
  (export $either "either" (type $either'))
"""

CORE = """
  (core module $m
    (memory (export "mem") 1)
    (global $bump (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.sub (i32.add (global.get $bump) (local.get 2)) (i32.const 1))
                             (i32.sub (i32.const 0) (local.get 2))))
      (global.set $bump (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
    (func (export "echo") (param i32) (result i32) (local.get 0)))
  (core instance $i (instantiate $m))
"""


def echo_wat() -> str:
    """WAT text of the type-zoo component."""
    pads = " ".join(f'(param "p{n}" u64)' for n in range(16))
    funcs = "\n".join(
        f'  (func (export "echo-{name}") (param "x" {wit}) {pads} (result (tuple {wit} u64))\n'
        f'    (canon lift (core func $i "echo") (memory (core memory $i "mem"))'
        f' (realloc (core func $i "realloc"))))'
        for name, wit in TYPES.items()
    )
    return f"(component\n{CORE}{NAMED_TYPES}{funcs}\n)"


class Zoo:
    """The compiled type-zoo component: its value types and a real echo through wasmtime."""

    def __init__(self) -> None:
        config = wasmtime.Config()
        config.epoch_interruption = True
        self.engine = wasmtime.Engine(config)
        self.component = wc.Component(self.engine, echo_wat())
        self.linker = wc.Linker(self.engine)
        self.linker.add_wasip2()
        exports = self.component.type.exports(self.engine)
        self.funcs: dict[str, Any] = {n: exports[f"echo-{n}"].ty for n in TYPES}
        self.types: dict[str, Any] = {n: f.params[0][1] for n, f in self.funcs.items()}

    def echo(self, name: str, value: Any) -> Any:
        """Pass ``value`` (a wasmtime value) to the guest and return what comes back."""
        store = wasmtime.Store(self.engine)
        store.set_wasi(wasmtime.WasiConfig())
        store.set_epoch_deadline(1_000_000)
        instance = self.linker.instantiate(store, self.component)
        func = instance.get_func(store, f"echo-{name}")
        assert func is not None
        out = func(store, value, *([0] * 16))
        func.post_return(store)
        return out[0]


@cache
def get_zoo() -> Zoo:
    """The zoo, compiled once per test session."""
    return Zoo()
