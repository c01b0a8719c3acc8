"""The report: ``performance.json`` (everything, raw runs included) and ``performance.md`` (tables).

Every figure in the Markdown comes from the results of the run that writes it, including the
pass/fail column of the target table (see ``bench.targets``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench import model
from bench.end_to_end import VARIANTS, baseline_key, endpoint_key
from bench.mcp_http import ERA_2025, ERA_2026
from bench.plan import SECTION_HELP, Plan
from bench.targets import AT_CONNECTIONS, TIMES, cancel_row, evaluate, worker_us_per_call


def _n(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _cpu(cores: dict[str, float]) -> str:
    """``gateway 0.45, worker 0.40, ...``: processes by cores busy, busiest first (idle ones left out)."""
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(cores.items(), key=lambda kv: -kv[1]) if v >= 0.01) or "—"


def _per_call(cores: dict[str, float], rps: float) -> str:
    """``gateway 141, worker 168, ...``: CPU microseconds each process spends per call (wrk left out)."""
    if not rps:
        return "—"
    busy = sorted(((k, v) for k, v in cores.items() if k != "wrk" and v >= 0.01), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v / rps * 1e6:.0f}" for k, v in busy) or "—"


def _verdict(passed: bool | None) -> str:
    return {True: "**pass**", False: "**FAIL**", None: "not measured"}[passed]


def _targets_section(results: dict[str, Any]) -> list[str]:
    rows = []
    for target in results["targets"]:
        unit = target["unit"]
        digits = 2 if unit in (TIMES, "ms") else 0
        rows.append(
            [
                target["target"] + (f" ({target['note']})" if target["note"] else ""),
                f"{_n(target['measured'], digits)} {unit}",
                f"{target['op']} {_n(target['threshold'], digits)} {unit}",
                _verdict(target["pass"]),
            ]
        )
    return ["## Targets", "", *_table(["target", "measured", "goal", "result"], rows)]


def _http_order() -> list[str]:
    """Endpoint keys in table order: kit_add (toolbus, SDK, both eras), the limit, then each variant."""
    order = [endpoint_key(kind, era) for era in (ERA_2026, ERA_2025) for kind in ("toolbus", "sdk")] + ["limit"]
    for variant in VARIANTS:
        order += [endpoint_key("toolbus", era, variant.name) for era in variant.eras]
    return order


def _tool_label(row: dict[str, Any]) -> str:
    """``kit_add``, ``calcpure_add (warm)``, ``kitshort_add (fresh, declared short)``: the tool and how it runs."""
    tool = str(row.get("tool", "kit_add"))
    how = next((v.instances for v in VARIANTS if v.tool == tool), "fresh")
    return tool if how == "fresh" else f"{tool} ({how})"


def _http_section(results: dict[str, Any], plan: Plan) -> list[str]:
    http = results.get("http")
    if not http:
        return []
    summary = {(row["endpoint"], row["connections"]): row for row in http["summary"]}
    order = _http_order()
    rows = []
    for connections in sorted({c for _, c in summary}):
        for endpoint in order:
            row = summary.get((endpoint, connections))
            if row is None:
                continue
            vs_sdk = vs_limit = "—"
            if endpoint.startswith("toolbus-"):
                sdk = summary.get((baseline_key(endpoint.rsplit("-", 1)[1]), connections))
                limit = summary.get(("limit", connections))
                vs_sdk = f"{row['rps'] / sdk['rps']:.2f}{TIMES}" if sdk and sdk["rps"] else "—"
                vs_limit = f"{row['rps'] / limit['rps']:.2f}{TIMES}" if limit and limit["rps"] else "—"
            rows.append(
                [
                    endpoint,
                    _tool_label(row) if endpoint != "limit" else "— (echo over NATS)",
                    str(connections),
                    _n(row["rps"], 0),
                    _n(row["p50_ms"]),
                    _n(row["p90_ms"]),
                    _n(row["p99_ms"]),
                    str(row["errors"]),
                    vs_sdk,
                    vs_limit,
                ]
            )
    header = [
        "endpoint",
        "tool",
        "connections",
        "calls/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "errors",
        "vs SDK (same era)",
        "vs limit",
    ]
    variants = ", ".join(f"`{v.tool}` ({v.instances})" for v in VARIANTS)
    lines = [
        "## End to end over HTTP",
        "",
        f"`tools/call` adding 2 + 3 with wrk: 1 thread, {plan.http_duration_s:g} s per run after a "
        f"{plan.http_warmup_s:g} s warm-up, median of {plan.runs} run(s); errors are summed over the runs "
        '(any response that is not HTTP 200 with `"text":"5"` in its body, plus socket errors). '
        "`kit_add` is the WAT testkit (a 1 KB component) at every connection count; the variants "
        f"({variants}) run at {', '.join(str(c) for c in plan.http_variant_connections)} connections only. "
        "`calc_add` is examples/calc, the componentize-py component `toolbus up`'s default config serves, with "
        "a fresh instance per call like every tool by default; *warm* rows are the same components declared "
        "pure (`reuse_instances = true`), which reuse an instance per guest thread, and are never quoted as "
        "fresh figures; *declared short* is the testkit with `limits.inline = true` (its calls run on the "
        "worker's event loop, no hand-off to a guest thread), a fresh instance per call, beside the default. "
        "The SDK baseline's `add` does what both guests do (s32 arguments, a 32-bit wrapping sum: "
        "bench/servers/sdk.py), so its `kit_add` rows are every tool's baseline in their era. toolbus runs "
        "with `toolbus up`'s defaults: a worker process per core, each pinned to its core, two guest threads "
        "each ([worker] in docs/operations.md).",
        "",
        *_table(header, rows),
    ]
    cpu_rows = []
    for endpoint in order:
        row = summary.get((endpoint, AT_CONNECTIONS))
        if row is None:
            continue
        cpu = row["cpu_cores"]
        per_call = _per_call(cpu, row["rps"])
        worker_us = worker_us_per_call(row)
        total_us = sum(model.per_call_us(row).values())
        cpu_rows.append(
            [
                endpoint,
                _tool_label(row) if endpoint != "limit" else "—",
                _cpu(cpu),
                per_call,
                _n(worker_us, 0) if endpoint.startswith("toolbus-") else "—",
                _n(total_us, 0),
                _n(sum(cpu.values())),
                _n(row["machine_cores_busy"]),
            ]
        )
    lines += [
        f"CPU during the runs at {AT_CONNECTIONS} connections, in cores busy (1.00 = one core; the machine has "
        f"{results['machine']['cpu_count']}). *CPU µs per call*: each process's CPU time over the run divided by "
        "the calls it served; *worker µs per call* sums every worker process (the issue's worker target); "
        "*total* is every measured process but wrk. *machine* is everything on the machine: the measured "
        "processes, wrk, the bench itself and anything else running.",
        "",
        *_table(
            [
                "endpoint",
                "tool",
                "cores busy per process",
                "CPU µs per call",
                "worker µs per call",
                "total µs per call",
                "measured processes",
                "machine",
            ],
            cpu_rows,
        ),
    ]
    return lines


def _responder_us(target: str, row: dict[str, Any]) -> float | None:
    """CPU µs per call of what answers the bus target: every worker process, or the echo responder."""
    cores = row.get("cpu_cores", {})
    if target.startswith("toolbus-worker"):
        busy = sum(v for k, v in cores.items() if model.role_of(k) == "worker")
    else:
        busy = cores.get("echo-responder", 0.0)
    return busy / row["rps"] * 1e6 if row.get("rps") and busy else None


def _bus_section(results: dict[str, Any]) -> list[str]:
    bus = results.get("bus")
    if not bus:
        return []
    rows = []
    by_key = {(row["target"], row["in_flight"]): row for row in bus["summary"]}
    order = {"toolbus-worker": 0, "toolbus-worker-short": 1, "raw-echo": 2}
    for (target, in_flight), row in sorted(by_key.items(), key=lambda kv: (kv[0][1], order.get(kv[0][0], 3))):
        echo = by_key.get(("raw-echo", in_flight))
        worker = target.startswith("toolbus-worker")
        vs = f"{row['rps'] / echo['rps']:.2f}{TIMES}" if worker and echo and echo["rps"] else "—"
        rows.append(
            [
                target,
                str(in_flight),
                _n(row["rps"], 0),
                _n(row["p50_ms"] * 1000, 0),
                _n(row["p90_ms"] * 1000, 0),
                _n(row["p99_ms"] * 1000, 0),
                str(row["errors"]),
                vs,
                _cpu(row.get("cpu_cores", {})),
                _n(_responder_us(target, row), 0),
            ]
        )
    header = [
        "target",
        "in flight",
        "calls/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "errors",
        "vs raw echo",
        "cores busy",
        "responder CPU µs per call",
    ]
    return [
        "## Direct bus path",
        "",
        "NATS requests from a nats-py load generator (its own process) straight to `toolbus.call.kit_add` "
        "(answered by the worker, a fresh instance per call) and to a raw nats-py echo responder, "
        "on the same nats-server; *toolbus-worker-short*, where the checkout has it, calls `kitshort_add`, the "
        "testkit declared short (`limits.inline`: fresh instances run on the worker's event loop).",
        "",
        *_table(header, rows),
    ]


def _size(wasm_bytes: int) -> str:
    return f"{wasm_bytes / 1e6:.2f} MB" if wasm_bytes > 1e5 else f"{wasm_bytes:,} B"


def _wasm_section(results: dict[str, Any]) -> list[str]:
    wasm = results.get("wasm")
    if not wasm:
        return []
    rows = []
    for tool in wasm["tools"]:
        p50 = {k: v.get("p50") for k, v in tool.items() if k.endswith("_ms")}
        rows.append(
            [
                f"{tool['tool']} ({tool['language']})",
                tool["kind"],
                _size(tool["wasm_bytes"]),
                _n(p50["cold_compile_ms"], 1),
                _n(p50["cached_load_ms"], 2),
                _n(p50["load_ms"], 2),
                *(
                    _n(p50[key] * 1000, 1)
                    for key in ("store_ms", "instantiate_ms", "fresh_instance_ms", "first_call_ms")
                ),
                _n(None if p50.get("warm_call_ms") is None else p50["warm_call_ms"] * 1000, 1),
                _n(p50["call_ms"] * 1000, 1),
                _n(None if p50.get("reused_call_ms") is None else p50["reused_call_ms"] * 1000, 1),
            ]
        )
    header = [
        "tool",
        "kind",
        "size",
        "cold compile ms",
        "cached load ms",
        "tool load ms",
        "Store µs",
        "instantiate µs",
        "fresh instance µs",
        "guest call µs",
        "guest call, live instance µs",
        "whole call µs",
        "whole call, declared pure µs",
    ]
    came: dict[str, list[str]] = {}  # how → the tools built from source that came that way
    for tool in wasm["tools"]:
        build = tool.get("build")
        if build is not None:
            how = "from the build cache" if build["cached"] else f"built in {build['seconds']:.1f} s"
            came.setdefault(how, []).append(tool["tool"])
    skipped = [
        f"**{s['tool']} ({s['kind']}, {s['language']}) was not measured**: {s['reason'].splitlines()[0]}"
        for s in wasm.get("skipped", [])
    ]
    return [
        "## Wasm costs per tool kind",
        "",
        "Medians, all measured in one process of the same run. Components: `calc` (examples/calc, componentize-py) "
        "and `kit` (examples/wat/testkit.wat), each called as `add(2, 3)`; WASI command modules: `wordcount` "
        "(examples/wordcount, C with wasi-libc) and `echo` (examples/wat/echo.wat, copies stdin to stdout), each "
        '"called" with `{"text": "hello wide world"}` on stdin. *cold compile*: `load_component` / `load_module` '
        "into an empty cache (compile, serialize, write); *cached load*: the same from the warm cache; *tool load*: "
        "`LoadedComponent.load` / `LoadedCommand.load` from the warm cache (tools derived, imports linked, one trial "
        "instantiation); *fresh instance* = *Store* (WASI streams, deadline, memory limit) + *instantiate*, what "
        "every call pays before the guest runs; *guest call*: the guest's own run on that fresh instance (a "
        "component's export plus `post_return`; a command's `_start`, which reads stdin and writes stdout); *live "
        "instance*: the export again on a live instance (a command's instance runs once, so it has none); *whole "
        "call*: `LoadedComponent.call` / `LoadedCommand.call`, the worker's whole per-call path (arguments in, "
        "result out); *declared pure*: the same with `reuse_instances = true` (a warm instance: no Store, no "
        "instantiation), where the run measured it, never in place of the fresh figure. "
        + "; ".join(f"{' and '.join(names)} came {how}" for how, names in came.items())
        + ("." if came else ""),
        "",
        *_table(header, rows),
        *skipped,
        *([""] if skipped else []),
    ]


def _restart_section(results: dict[str, Any]) -> list[str]:
    restart = results.get("restart")
    if not restart:
        return []
    rows = [
        [
            s["setup"],
            str(s["components"]),
            _n(s["ready_ms"], 0),
            _n(s["ready_ms_per_component"], 0),
            _n(s.get("cpu_ms"), 0),
            _n(s["component_load_ms"], 0),
        ]
        for s in restart["setups"]
    ]
    header = [
        "worker setup",
        "components",
        "ready ms",
        "ready ms per component",
        "worker CPU to ready ms",
        "of which loading components ms",
    ]
    return [
        "## Worker restart with cached components",
        "",
        "From spawning `toolbus worker` to its `WorkerAnnouncement` with state `ready` and no component still "
        "`loading` on the announce subject "
        f"(median). For scale: `toolbus worker --help` alone takes {restart['cli_start_ms']:.0f} ms.",
        "",
        *_table(header, rows),
    ]


def _startup_section(results: dict[str, Any]) -> list[str]:
    startup = results.get("startup")
    if not startup:
        return []
    rows = [
        [
            name,
            str(runs["runs"]),
            _n(runs["first_tool_s"], 1),
            f"{_n(runs['all_tools_s'], 1)} ({runs['tools']} tools)",
            _n(runs["banner_s"], 1),
        ]
        for name, runs in (("from an empty cache", startup["cold"]), ("warm (cache filled)", startup["warm"]))
    ]
    header = ["start", "runs", "first tool listed s", "all tools listed s", "banner s"]
    return [
        "## Start-up of `toolbus up`",
        "",
        "`toolbus up` with the example config (five componentize-py projects, two WAT commands) and a fresh "
        "state directory, from spawning it (median): when the gateway first lists a tool and then all of them "
        f"(its `/readyz` `tools` count, probed every {startup['poll_s']:g} s: what `tools/list` returns), and when "
        "`up` prints its banner (every component served, `/readyz` 200). A cold start has an empty cache "
        "directory: every project is built and every component compiled.",
        "",
        *_table(header, rows),
    ]


def _scaling_section(results: dict[str, Any]) -> list[str]:
    scaling = results.get("scaling")
    if not scaling:
        return []
    cores = results["machine"]["cpu_count"]
    rows = [
        [
            str(s["workers"]),
            str(cores),
            _n(s["rps"], 0),
            _n(s["p50_ms"]),
            _n(s["p99_ms"]),
            str(s["errors"]),
        ]
        for s in scaling["summary"]
    ]
    sequential = scaling.get("sequential") or {}
    ratio_2_vs_1 = scaling.get("ratio_2_vs_1")
    return [
        "## Scaling",
        "",
        f'`{scaling["tool"]}` with `{{"iterations": {scaling["iterations"]}}}` '
        f"({_n(sequential.get('p50_ms'))} ms per call when sent one at a time), over the direct bus path with "
        f"{scaling['runs'][0]['in_flight'] if scaling['runs'] else '?'} calls in flight; one guest per worker "
        f"process, on {cores} cores shared with the load generator, nats-server and the registry. "
        f"2 workers vs 1: **{_n(ratio_2_vs_1)}{TIMES}**.",
        "",
        *_table(["worker processes", "cores", "calls/s", "p50 ms", "p99 ms", "errors"], rows),
        *_small_calls(scaling.get("small_calls", []), cores),
    ]


def _small_calls(small: list[dict[str, Any]], cores: int) -> list[str]:
    """The scaling section's small-call series (``kit_add``), where the run has it: calls/s and CPU per call."""
    if not small:
        return []
    rows = [
        [
            str(s["workers"]),
            str(cores),
            _n(s.get("rps"), 0),
            _n(s.get("p99_ms")),
            str(s.get("errors", 0)),
            ", ".join(
                f"{role} {us:.0f}"
                for role, us in sorted(s.get("cpu_us_per_call", {}).items(), key=lambda kv: -kv[1])
                if us >= 1
            )
            or "—",
        ]
        for s in small
    ]
    return [
        f"`kit_add` (a guest of a few µs: the worker's Python is the call's cost), {small[0].get('in_flight', '?')} "
        "in flight, on the same systems: small calls use more cores only through more worker processes.",
        "",
        *_table(["worker processes", "cores", "calls/s", "p99 ms", "errors", "CPU µs per call"], rows),
    ]


def _model_section(results: dict[str, Any]) -> list[str]:
    """The labelled model: calls/s on 8 and 32 cores from this run's CPU per call (``bench.model``)."""
    summary = {
        row["endpoint"]: row
        for row in results.get("http", {}).get("summary", [])
        if row["connections"] == AT_CONNECTIONS
    }
    wanted = [key for key in _http_order() if key.startswith("toolbus-") or key == "limit"]
    projected = model.model({key: summary[key] for key in wanted if key in summary})
    if not projected:
        return []
    rows = []
    for entry in projected:
        cells = []
        for p in entry["projections"]:
            processes = ", ".join(f"{n} {role}" for role, n in p["processes"].items())
            cells.append(f"{_n(p['calls_per_s'], 0)} ({processes})")
        per_call = ", ".join(f"{role} {us:.0f}" for role, us in entry["per_call_us"].items())
        rows.append([entry["endpoint"], per_call, _n(entry["measured_rps"], 0), *cells])
    header = [
        "endpoint",
        f"CPU µs per call at {AT_CONNECTIONS} connections",
        "measured calls/s (2 cores, wrk included)",
        *(f"**model**: {cores} cores, calls/s (processes)" for cores in model.MODEL_CORES),
    ]
    return [
        "## Scaling to bigger machines: a model, not a measurement",
        "",
        "**This table is a model.** It divides the cores of a machine by the CPU per call each process of this run "
        f"spent at {AT_CONNECTIONS} connections (the CPU table above): N cores serve at most "
        "N * 10⁶ / (total µs per call) calls/s, if every role scales out (gateways side by side behind "
        "SO_REUSEPORT or a load balancer, workers in the call's queue group: `toolbus up --workers`, one "
        "multi-threaded nats-server) and the load generator runs elsewhere. Each Python process is "
        "single-threaded, so a role needs ⌈calls/s * its µs / 10⁶⌉ processes (in brackets). It charges nothing "
        "for contention, memory bandwidth or the network beyond what this run paid, so read it as a ceiling; "
        "the 2-core column against the measured one shows how far this machine falls short of it (wrk's share "
        "and other work on the machine).",
        "",
        *_table(header, rows),
    ]


def _list_section(results: dict[str, Any]) -> list[str]:
    listing = results.get("list")
    if not listing:
        return []
    rows = []
    for era in listing["eras"]:
        first, full = era["first_page_ms"], era["full_listing_ms"]
        rows.append(
            [
                era["era"],
                str(era["page_size"]),
                f"{_n(first['p50'])} / {_n(first['p90'])} / {_n(first['p99'])}",
                f"{era['pages']} pages, {era['tools']} tools",
                f"{_n(full['p50'], 1)} / {_n(full['p90'], 1)} / {_n(full['p99'], 1)}",
            ]
        )
    header = ["era", "page size", "first page p50 / p90 / p99 ms", "full listing", "full listing p50 / p90 / p99 ms"]
    return [
        f"## tools/list with {listing['registered']:,} registered tools",
        "",
        "The bench announces the tools as a worker would (and answers the registry's pings); the registry "
        "puts them in the tools KV bucket the gateway watches; one keep-alive client, sequential, "
        f"once the gateway lists all {listing['listed']:,} (the examples' tools included).",
        "",
        *_table(header, rows),
    ]


_CANCEL_PATHS = {
    "2025-11-25": "2025-11-25 client (`notifications/cancelled`)",
    "2026-07-28": "2026-07-28 client (closes its stream)",
    "bus": "bus only (no gateway)",
}


def _spread(stats: dict[str, Any], *keys: str, digits: int = 1) -> str:
    """``p50 / p90`` (or the given keys) of a ``bench.stats.summary``, ``—`` where missing."""
    return " / ".join(_n(stats.get(key), digits) for key in keys)


def _cancel_section(results: dict[str, Any]) -> list[str]:
    cancel = results.get("cancel")
    if not cancel:
        return []
    tick = cancel["epoch_tick_ms"]
    ages = {age: f"{at:g}-{at + tick:g} ms" for age, at in cancel["ages"].items()}
    rows = []
    for row in cancel["summary"]:
        rows.append(
            [
                _CANCEL_PATHS.get(row["path"], row["path"]),
                ages.get(row["age"], row["age"]),
                str(row["guest_stopped_ms"]["n"]),
                _spread(row["cancel_on_bus_ms"], "p50", "p90"),
                "**"
                + _spread(row["guest_stopped_ms"], "p50", "p90")
                + "** / "
                + _n(row["guest_stopped_ms"].get("max"), 1),
                _spread(row["worker_cpu_after_ms"], "p50", "max"),
                _spread(row["reply_on_bus_ms"], "p50", "p90"),
                _spread(row["client_done_ms"], "p50", "p90"),
                _spread(row["baseline_ms"], "p50", "p90", digits=2),
            ]
        )
    header = [
        "client",
        "cancelled into the call",
        "cancels",
        "cancel on the bus p50 / p90 ms",
        "guest stops using CPU p50 / p90 / max ms",
        "worker CPU after the cancel p50 / max ms",
        "worker's reply on the bus p50 / p90 ms",
        "client sees the call end p50 / p90 ms",
        "plain call p50 / p90 ms",
    ]
    return [
        "## Cancellation",
        "",
        f'`{cancel["tool"]}` (an endless loop) called by an mcp SDK `Client` (`mode="legacy"`, `mode="auto"`) '
        "and cancelled by cancelling the call's task, as the gateway tests do; every time is in ms after that "
        f"cancel. The call's age at the cancel counts from its request on the bus, plus a random 0-{tick:g} ms so "
        "the cancel falls anywhere in the worker's epoch tick. *guest stops using CPU*: the first sample of the "
        "guest thread's CPU time (`/proc/PID/task/TID/schedstat`, read every "
        f"{cancel['sample_interval_ms']:g} ms) after which it never grew again, watched until "
        "50 ms after the worker's reply; *worker CPU after the cancel*: what the whole worker process used from "
        "the cancel on (its CPU clock, exact); "
        "*cancel on the bus* and *worker's reply on the bus*: when a plain subscriber gets the empty message on "
        "`toolbus.cancel.<request-id>` and the worker's reply; *client sees the call end*: when the awaited task "
        "ends. *plain call*: the round trip of "
        f"`{cancel['baseline_tool']}` with the same client, in the same run. The bus-only rows send the call as a "
        "NATS request and the cancel message straight from the bench: the worker's share alone.",
        "",
        *_table(header, rows),
        _cancel_explanation(cancel, ages),
        "",
    ]


def _cancel_explanation(cancel: dict[str, Any], ages: dict[str, str]) -> str:
    """One paragraph: where the time between a cancel and the guest's stop goes, in this run's numbers."""

    def p50(path: str, age: str, key: str) -> float | None:
        value = cancel_row(cancel, path, age).get(key, {}).get("p50")
        return None if value is None else float(value)

    def row_p90(path: str, age: str) -> float | None:
        value = cancel_row(cancel, path, age).get("guest_stopped_ms", {}).get("p90")
        return None if value is None else float(value)

    worst = max(
        ((row_p90(path, age), path, age) for path in ("2025-11-25", "2026-07-28") for age in ages),
        key=lambda t: -1.0 if t[0] is None else t[0],
    )
    text = (
        "A cancel becomes a stopped guest in three steps: the gateway turns the client's cancel into the message "
        "on `toolbus.cancel.<request-id>`; the worker sets the call's cancelled flag, and the guest's epoch-deadline "
        f"callback ends it at the next {cancel['epoch_tick_ms']:g} ms tick; the guest's thread encodes the "
        "CANCELLED reply and goes idle. Without a gateway (the bench publishes the cancel itself) the guest stops "
        f"p50 {_n(p50('bus', 'late', 'guest_stopped_ms'), 1)} ms after the cancel: the wait for the next tick "
        "(0 to 10 ms) plus the worker's scheduling. "
        f"A 2025-11-25 client's `notifications/cancelled` reaches the bus p50 "
        f"{_n(p50('2025-11-25', 'late', 'cancel_on_bus_ms'), 1)} ms after its cancel (a POST to the gateway, "
        f"which cancels the call's task, which publishes), so its guest stops p50 "
        f"{_n(p50('2025-11-25', 'late', 'guest_stopped_ms'), 1)} ms after it. A 2026-07-28 client closing its "
        f"stream reaches the bus p50 {_n(p50('2026-07-28', 'late', 'cancel_on_bus_ms'), 1)} ms after it cancels "
        f"a call {ages.get('late', '')} old"
    )
    early_bus, late_bus = p50("2026-07-28", "early", "cancel_on_bus_ms"), p50("2026-07-28", "late", "cancel_on_bus_ms")
    if early_bus is not None and late_bus is not None and early_bus > late_bus + 2 * cancel["epoch_tick_ms"]:
        early_age = p50("2026-07-28", "early", "call_age_ms") or 0.0
        text += (
            f", but p50 {_n(early_bus, 1)} ms after it cancels a call {ages.get('early', '')} old: the closed "
            f"stream is noticed only when the call is about {early_age + early_bus:.0f} ms old, whenever the client "
            "closed it, because the gateway's hot path starts watching a call's connection for a disconnect only "
            "once the call has outlived one to two of its ticks (`DISCONNECT_TICK_S` in gateway/hotpath.py); an "
            "early 2026 cancel waits for that"
        )
    else:
        text += ", and about as soon for a younger call"
    text += (
        ". The client sees its call end at once (p50 "
        f"{_n(p50('2026-07-28', 'late', 'client_done_ms'), 2)} ms): the SDK ends the task without waiting for the "
        "server. *worker CPU after the cancel* is what the cancelled call still cost: the guest keeps one core "
        "busy until it stops, or less of one when other processes get that core part of the time, and the "
        "worker's reply adds a little."
    )
    if worst[0] is not None:
        verdict = "meets" if worst[0] <= cancel["target_ms"] else "misses"
        text += (
            f" The slowest case, a {worst[1]} client cancelling {ages.get(worst[2], worst[2])} into the call, has "
            f"its guest stopped {worst[0]:.1f} ms after the cancel at p90: it {verdict} the "
            f"{cancel['target_ms']:g} ms target."
        )
    return text


def _profile_section(results: dict[str, Any]) -> list[str]:
    profiles = results.get("profile")
    if not profiles:
        return []
    lines = [
        f"## Where the CPU goes (py-spy, {AT_CONNECTIONS} connections)",
        "",
        "Extra runs, not part of the figures above: `py-spy record --gil --nonblocking` samples the gateway and "
        f"the worker for {results['plan']['http_duration_s']:g} s while wrk loads toolbus. Only samples of the "
        "thread holding the GIL count (Python at work; idle waits and guest time inside wasmtime drop out). "
        "*self*: share of samples with the function on top of the stack (a C call such as a socket write counts "
        "for the Python function that made it); *inclusive*: share with the function anywhere on the stack.",
        "",
    ]
    for endpoint, sampled in profiles.items():
        for role, folded in sampled.get("processes", {}).items():
            if "error" in folded:
                lines += [f"{endpoint}, {role}: py-spy failed: {folded['error'].splitlines()[-1:]}", ""]
                continue
            own, anywhere = folded["self"][:10], folded["inclusive"][:10]
            rows = [
                [
                    f"`{own[i]['function']}` {own[i]['share']:.0%}" if i < len(own) else "",
                    f"`{anywhere[i]['function']}` {anywhere[i]['share']:.0%}" if i < len(anywhere) else "",
                ]
                for i in range(max(len(own), len(anywhere)))
            ]
            rps = sampled.get("load", {}).get("rps")
            lines += [
                f"**{endpoint}, {role}** ({folded['samples']:,} samples; {_n(rps, 0)} calls/s during the sample)",
                "",
                *_table(["self", "inclusive"], rows),
            ]
    return lines


def _cost_notes(results: dict[str, Any]) -> list[str]:
    """Where the time goes, in numbers of this run."""
    notes = []
    summary = {(r["endpoint"], r["connections"]): r for r in results.get("http", {}).get("summary", [])}
    toolbus, limit = summary.get(("toolbus-2026", AT_CONNECTIONS)), summary.get(("limit", AT_CONNECTIONS))
    if toolbus and limit and toolbus["rps"] and limit["rps"]:

        def total_us(row: dict[str, Any]) -> float:
            return float(sum(v for k, v in row["cpu_cores"].items() if k != "wrk") / row["rps"] * 1e6)

        notes.append(
            f"CPU per call at {AT_CONNECTIONS} connections (2026 era): toolbus {total_us(toolbus):.0f} µs over its "
            f"processes ({_per_call(toolbus['cpu_cores'], toolbus['rps'])}), the limit endpoint "
            f"{total_us(limit):.0f} µs ({_per_call(limit['cpu_cores'], limit['rps'])})."
        )
    restart = results.get("restart")
    if restart and restart["setups"]:
        slowest = max(restart["setups"], key=lambda s: s["ready_ms"])
        notes.append(
            f"Worker restart: loading the cached components takes {slowest['component_load_ms']:.0f} ms of the "
            f"{slowest['ready_ms']:.0f} ms ({slowest['setup']}); the rest is starting the process, importing "
            f"and connecting — `toolbus worker --help` alone takes {restart['cli_start_ms']:.0f} ms."
        )
    return notes


def _notes(results: dict[str, Any]) -> list[str]:
    notes = [
        "The SDK baseline runs stateless (`stateless_http=True, json_response=True`): its 2025-11-25 `initialize` "
        "returns no `Mcp-Session-Id`, so its 2025 runs carry only `MCP-Protocol-Version: 2025-11-25`. toolbus's "
        "2025 runs use a real session, opened with `initialize` + `notifications/initialized` before each run.",
        "Every request has its own JSON-RPC id; each run's responses are all checked, not sampled.",
    ]
    background = results["machine"].get("background_cores_busy", 0.0)
    if background > 0.2:
        notes.append(
            f"The machine was not idle: {background:.2f} cores were busy before the bench started anything "
            f"(load average {results['machine']['load_average_at_start'][0]:.2f}). Other work competes for the "
            "cores, which lowers and scatters absolute figures; ratios between endpoints measured in interleaved "
            "runs are the more robust figures."
        )
    http = results.get("http")
    if http:
        outside = [row["machine_cores_busy"] - sum(row["cpu_cores"].values()) for row in http["summary"]]
        if outside and max(outside) > 0.3:
            notes.append(
                "During the HTTP runs, on average "
                f"{sum(outside) / len(outside):.2f} cores (at most {max(outside):.2f}) were busy outside the "
                "measured processes and wrk: the bench's own Python process accounts for a little of it, other "
                "work on the machine for the rest."
            )
        saturated = [f"{r['endpoint']}@{r['connections']}" for r in http["summary"] if r["machine_cores_busy"] >= 1.85]
        if saturated:
            notes.append(
                "Both cores were busy (≥ 1.85 cores) during " + ", ".join(saturated) + ": those figures are "
                "bounded by the machine, load generator included."
            )
    notes += _cost_notes(results)
    for section, failure in results.get("failures", {}).items():
        notes.append(f"**Section `{section}` failed** in this run: {failure.splitlines()[0]}")
    return ["## Notes", "", *[f"- {note}" for note in notes], ""]


def _updates(results: dict[str, Any]) -> list[str]:
    """Under the header: the sections re-measured since the run above (``--merge``), and how."""
    lines = []
    first = results["machine"]
    for update in results.get("updates", []):
        machine, git = update["machine"], update["machine"]["git"]
        dirty = " (with uncommitted changes)" if git["uncommitted_changes"] else ""
        differ = [
            f"{name} {version}"
            for name, version in machine["versions"].items()
            if version != "not used" and version != first["versions"].get(name)
        ]
        busy = machine.get("background_cores_busy", 0.0)
        lines.append(
            "Re-measured since: "
            + ", ".join(f"`{s}`" for s in update["sections"])
            + f" by `{update['command']}` on {machine['date']}, commit `{git['commit'][:12]}`{dirty}"
            + (f"; versions that differ: {', '.join(differ)}" if differ else "")
            + (f"; {busy:.2f} cores were busy with other work before it started" if busy > 0.2 else "")
            + ". Its figures replace that section's; every other figure is from the run above."
        )
        lines.append("")
    return lines


def markdown(results: dict[str, Any], plan: Plan) -> str:
    """The whole ``performance.md``."""
    machine = results["machine"]
    versions = machine["versions"]
    git = machine["git"]
    dirty = " (with uncommitted changes)" if git["uncommitted_changes"] else ""
    sections = results["sections"]
    lines = [
        "# Performance",
        "",
        f"Measured by `bench/run.py` on {machine['date']}: {machine['cpu_count']} {TIMES} {machine['cpu_model']}, "
        f"Python {machine['python']}, wasmtime {versions['wasmtime']}, nats-py {versions['nats-py']}, "
        f"mcp {versions['mcp']}, {versions['nats-server']}, {versions['wrk']}; commit `{git['commit'][:12]}`{dirty}. "
        f"The run took {results['duration_s'] / 60:.1f} minutes"
        + ("" if not results["quick"] else " (`--quick`: one short run each, for development only)")
        + ". Raw runs, medians and versions are in [performance.json](performance.json).",
        "",
        *_updates(results),
        "![calls per second and p99 latency by target](performance.png)",
        "",
        "## How to reproduce",
        "",
        "```sh",
        ".venv/bin/pip install -e '.[bench]'        # matplotlib for the chart",
        ".venv/bin/python bench/run.py              # everything, ~12 minutes; writes docs/performance.*",
        ".venv/bin/python bench/run.py --quick      # one short run of each, for development",
        ".venv/bin/python bench/run.py --only http,bus --out /tmp/bench",
        ".venv/bin/python bench/run.py --only wasm --merge  # re-measure a section into this report",
        ".venv/bin/python -m bench.percall OLD_CHECKOUT . --rounds 3  # CPU µs per call of each process, A/B",
        ".venv/bin/python -m bench.budget measure . --tool calc_add   # that CPU split hop by hop (py-spy)",
        "```",
        "",
        "wrk comes from Debian (`apt-get install wrk`); the bench installs it when it is missing. The bench starts "
        "everything itself on free ports (toolbus through `toolbus up --config bench/config/system.toml`, with "
        "its embedded nats-server) and stops it all at the end, on failure and on Ctrl-C. Sections in this run: "
        + ", ".join(f"`{s}`" for s in sections)
        + ".",
        "",
        *[f"- `{name}`: {text}" for name, text in SECTION_HELP.items()],
        "",
        *_targets_section(results),
        *_http_section(results, plan),
        *_bus_section(results),
        *_wasm_section(results),
        *_startup_section(results),
        *_restart_section(results),
        *_scaling_section(results),
        *_model_section(results),
        *_list_section(results),
        *_cancel_section(results),
        *_profile_section(results),
        *_notes(results),
    ]
    return "\n".join(lines)


def write(results: dict[str, Any], plan: Plan, out_dir: Path) -> dict[str, Path]:
    """Add the target table to ``results``; write the JSON and the Markdown; return their paths."""
    results["targets"] = [target.as_dict() for target in evaluate(results)]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "performance.json", "md": out_dir / "performance.md"}
    paths["json"].write_text(json.dumps(_finite(results), indent=1, allow_nan=False) + "\n")
    paths["md"].write_text(markdown(results, plan))
    return paths


def _finite(value: Any) -> Any:
    """``value`` with every NaN replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
