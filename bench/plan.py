"""What one bench run measures and for how long: the full plan, or the quick one for development."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from dataclasses import fields as dataclass_fields
from typing import Any, Final

SECTIONS: Final = ("http", "bus", "wasm", "startup", "restart", "scaling", "list", "cancel")
"""Every section, in the order they run. ``--only`` takes a comma-separated subset."""

SECTION_HELP: Final = {
    "http": "end to end over HTTP with wrk: toolbus (both eras) vs the SDK baseline (both eras) vs the limit; "
    "kit_add (WAT), calc_add (componentize-py) fresh, and both declared pure (warm)",
    "bus": "direct bus path: NATS requests to the toolbus worker vs a raw nats-py echo responder",
    "wasm": "Wasm costs per tool kind: compile, load, instantiate, call (components and WASI commands)",
    "startup": "toolbus up with the examples, from an empty cache and warm: first tool listed, all listed, banner",
    "restart": "worker restart with cached components: process start to its ready announcement",
    "scaling": "a CPU-bound tool with 1 and 2 worker processes, over the direct bus path",
    "list": "tools/list with 1,000 registered tools, both eras (first page and full pagination)",
    "cancel": "a client's cancel to the guest no longer using CPU, both eras (and on the bus alone)",
}


@dataclass(frozen=True)
class Plan:
    """Repetitions and durations of every section."""

    runs: int = 3
    """Repetitions of every load run; the report shows medians."""
    http_connections: tuple[int, ...] = (1, 16, 64)
    http_variant_connections: tuple[int, ...] = (16,)
    """Where the variants run (``bench.end_to_end.VARIANTS``: calc_add, the pure tools): the targets' count."""
    http_duration_s: float = 5.0
    http_warmup_s: float = 1.0
    bus_in_flight: tuple[int, ...] = (1, 64)
    bus_duration_s: float = 3.0
    bus_warmup_s: float = 0.5
    scaling_in_flight: int = 16
    scaling_iterations: int = 1_000_000
    """Arguments of ``kit_burn``: about 2 ms of guest time per call."""
    scaling_duration_s: float = 4.0
    scaling_warmup_s: float = 1.0
    cold_compiles: int = 3
    """Cold compiles of the componentize-py component (about 6 s each)."""
    instantiations: int = 300
    """Fresh Store + instantiate samples per component (the small one gets ten times as many)."""
    restarts: int = 3
    startup_cold_runs: int = 3
    """Starts of ``toolbus up`` from an empty cache (each builds five componentize-py examples)."""
    startup_warm_runs: int = 3
    list_tools: int = 1000
    list_first_page_samples: int = 200
    list_full_samples: int = 30
    cancel_samples: int = 30
    """Cancels of a spinning guest per era (and on the bus alone)."""
    cancel_baseline_samples: int = 200
    """Plain ``kit_add`` round trips per era with the same client: the baseline."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> Plan:
        """The plan ``as_dict`` gave (as read back from JSON: lists become tuples again)."""
        known = {f.name for f in dataclass_fields(cls)}  # a field added since takes its default
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in known}
        return cls(**values)


FULL: Final = Plan()
QUICK: Final = replace(
    FULL,
    runs=1,
    http_duration_s=2.0,
    http_warmup_s=1.0,
    bus_duration_s=1.5,
    bus_warmup_s=0.3,
    scaling_duration_s=2.0,
    scaling_warmup_s=0.5,
    cold_compiles=1,
    instantiations=100,
    restarts=1,
    startup_cold_runs=1,
    startup_warm_runs=1,
    list_first_page_samples=50,
    list_full_samples=5,
    cancel_samples=5,
    cancel_baseline_samples=30,
)
