"""End to end over HTTP: one ``tools/call`` adding 2 + 3 against every endpoint, with wrk.

Endpoints: toolbus (gateway → NATS → worker → Wasm) in both eras, the SDK baseline in both
eras, and the limit endpoint, all with ``kit_add`` (the WAT testkit) at every connection count.
At ``Plan.http_variant_connections`` only, the variants: ``calc_add`` (the componentize-py
example, a fresh instance per call), the same two components declared pure (``calcpure_add``,
``kitwarm_add``: warm instances, reported on their own rows) and the testkit declared short
(``kitshort_add``: fresh instances, run on the worker's event loop; where the checkout has it).
The SDK baseline's ``kit_add`` is every variant's baseline: the SDK serves one ``add`` that does
what both guests do (s32 arguments, a 32-bit wrapping sum; bench/servers/sdk.py), so a second
SDK endpoint would measure the same Python under another name.
The runs are interleaved (connection count, then repetition, then endpoint) so that drift on
the machine touches them all alike. Before each run a 2025-11-25 client does its handshake and
keeps the session for the run; after the run the session is deleted.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from bench import wrk
from bench.cpu import CpuMeter, MachineMeter, mean_cores
from bench.mcp_http import ERA_2025, ERA_2026, McpClient, McpHttpError, call_template, request_headers
from bench.plan import Plan
from bench.stats import median_of_runs
from harness.processes import REPO
from schemas.config import LimitsSettings

TOOL: Final = "kit_add"
"""The tool of the main rows (the WAT testkit's ``add``, a fresh instance per call)."""
ARGUMENTS: Final = {"a": 2, "b": 3}
EXPECT: Final = '"text":"5"'
"""A good response holds this (the text content of the result); anything else is an error."""
PROBE_TIMEOUT_S: Final = 60.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Variant:
    """A tool the HTTP section calls besides ``kit_add``: which one, and how its instances live."""

    name: str
    """The key's middle part (``calc`` → ``toolbus-calc-2026``)."""
    tool: str
    instances: str
    """``fresh`` (a new Store per call, the default), ``warm`` (declared pure: ``reuse_instances``),
    or ``fresh, declared short`` (``limits.inline``: run on the worker's event loop)."""
    eras: tuple[str, ...] = (ERA_2026, ERA_2025)


VARIANTS: Final = (
    Variant("calc", "calc_add", "fresh"),
    Variant("calcpure", "calcpure_add", "warm"),
    Variant("kitwarm", "kitwarm_add", "warm", eras=(ERA_2026,)),
    Variant("kitshort", "kitshort_add", "fresh, declared short", eras=(ERA_2026,)),
)
"""bench/config/system.toml serves each (``kitshort`` through ``short_components``)."""
SHORT_KIT: Final = """
[[components]]
name = "kitshort"
path = "$repo/examples/wat/testkit.wat"
[components.limits]
inline = true
timeout_s = 1.0
"""
"""The testkit declared short (``limits.inline``: its calls run on the worker's event loop, with
no hand-off to a guest thread), still a fresh instance per call: reported beside the default."""


def short_calls_supported() -> bool:
    """Whether this checkout's config knows ``limits.inline`` (the worker change of issue 17)."""
    # A pydantic model (checkouts before settings moved to msgspec) or a msgspec Struct.
    names = getattr(LimitsSettings, "model_fields", None) or {f.name for f in msgspec.structs.fields(LimitsSettings)}
    return "inline" in names


def short_components() -> str:
    """The ``$short_components`` of bench/config/system.toml: the short testkit where supported."""
    return SHORT_KIT.replace("$repo", str(REPO)) if short_calls_supported() else ""


def endpoint_key(kind: str, era: str, variant: str = "") -> str:
    """``toolbus-2026`` (kit_add), ``toolbus-calc-2025``, ``sdk-2026``, ``limit``."""
    return "-".join(part for part in (kind, variant, era[:4] if kind != "limit" else "") if part)


def baseline_key(era: str) -> str:
    """The SDK endpoint a toolbus endpoint of ``era`` (any tool) is compared with."""
    return endpoint_key("sdk", era)


@dataclass(frozen=True)
class Endpoint:
    """One HTTP target: where it is, which era it speaks, and which processes serve it."""

    key: str
    """``toolbus-2026``, ``sdk-2025``, ``toolbus-calc-2026``, ``limit``..."""
    kind: str
    """``toolbus``, ``sdk`` or ``limit``."""
    era: str
    url: str
    processes: Mapping[int, str]
    """The processes whose CPU use a run records (pid → role)."""
    tool: str = TOOL
    variant: str = ""
    """"" for the main rows (``kit_add``, every connection count), else a ``Variant.name``."""

    def client(self) -> McpClient:
        return McpClient(self.url, self.era)

    def load(self, session_id: str | None) -> wrk.Load:
        headers = request_headers(self.era, "tools/call", self.tool, session_id)
        return wrk.Load(self.url, headers, call_template(self.era, self.tool, ARGUMENTS), EXPECT)

    def measured_at(self, connections: int, plan: Plan) -> bool:
        """Whether this endpoint runs at ``connections`` (variants only at ``plan.http_variant_connections``)."""
        return connections in (plan.http_connections if not self.variant else plan.http_variant_connections)


def probe(endpoint: Endpoint, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Call the tool once (retrying while the server starts) and check the answer.

    Raises:
        McpHttpError: no correct answer within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    problem = "no answer"
    while time.monotonic() < deadline:
        client = endpoint.client()
        try:
            client.handshake()
            result = client.call_tool(endpoint.tool, ARGUMENTS)
            text = result["content"][0]["text"]
            if text == "5" and not result.get("isError"):
                return
            problem = f"unexpected result {result}"
        except (OSError, McpHttpError, KeyError, IndexError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        finally:
            client.end_session()
            client.close()
        time.sleep(0.2)
    raise McpHttpError(f"{endpoint.key} at {endpoint.url} is not answering correctly: {problem}")


def _one_run(binary: str, endpoint: Endpoint, connections: int, plan: Plan) -> dict[str, Any]:
    client = endpoint.client()
    session_id = client.handshake()
    try:
        load = endpoint.load(session_id)
        wrk.run(binary, load, connections, plan.http_warmup_s)
        meter, machine = CpuMeter(endpoint.processes), MachineMeter()
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        meter.start()
        machine.start()
        result = wrk.run(binary, load, connections, plan.http_duration_s)
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall_s = result["duration_s"]
        cpu = meter.stop(wall_s)
        wrk_cpu = (children_after.ru_utime + children_after.ru_stime) - (
            children_before.ru_utime + children_before.ru_stime
        )
        cpu["wrk"] = round(wrk_cpu / wall_s, 2) if wall_s else 0.0
        result["cpu_cores"] = cpu
        result["machine_cores_busy"] = machine.stop(wall_s)
    finally:
        client.end_session()
        client.close()
    result["session"] = session_id is not None
    return result


def measure(binary: str, endpoints: list[Endpoint], plan: Plan, progress: Progress) -> list[dict[str, Any]]:
    """Every run of every endpoint at every connection count; returns the raw runs."""
    runs: list[dict[str, Any]] = []
    for connections in sorted({*plan.http_connections, *plan.http_variant_connections}):
        for repetition in range(1, plan.runs + 1):
            for endpoint in (e for e in endpoints if e.measured_at(connections, plan)):
                result = _one_run(binary, endpoint, connections, plan)
                runs.append(
                    {
                        "endpoint": endpoint.key,
                        "tool": endpoint.tool,
                        "connections": connections,
                        "run": repetition,
                        **result,
                    }
                )
                errors = f", {result['errors']} errors" if result["errors"] else ""
                progress(
                    f"{endpoint.key:<21} c={connections:<3} run {repetition}: {result['rps']:8.0f} calls/s  "
                    f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms{errors}"
                )
    return runs


SUMMARY_KEYS: Final = ("rps", "p50_ms", "p90_ms", "p99_ms", "mean_ms")


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over repetitions per (endpoint, connections); errors are summed over them."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["endpoint"], run["connections"]), []).append(run)
    rows = []
    for (endpoint, connections), group in groups.items():
        rows.append(
            {
                "endpoint": endpoint,
                "tool": group[0].get("tool", TOOL),
                "connections": connections,
                "runs": len(group),
                **median_of_runs(group, SUMMARY_KEYS),
                "errors": sum(run["errors"] for run in group),
                "requests": sum(run["requests"] for run in group),
                "cpu_cores": mean_cores(group),
                "machine_cores_busy": round(sum(run["machine_cores_busy"] for run in group) / len(group), 2),
            }
        )
    return rows


def toolbus_endpoints(url: str, processes: Mapping[int, str]) -> list[Endpoint]:
    """``kit_add`` in both eras, then every variant in its eras."""
    main = [Endpoint(endpoint_key("toolbus", era), "toolbus", era, url, processes) for era in (ERA_2026, ERA_2025)]
    served = [v for v in VARIANTS if v.name != "kitshort" or short_calls_supported()]
    variants = [
        Endpoint(endpoint_key("toolbus", era, v.name), "toolbus", era, url, processes, v.tool, v.name)
        for v in served
        for era in v.eras
    ]
    return [*main, *variants]


def sdk_endpoints(url: str, processes: Mapping[int, str]) -> list[Endpoint]:
    """``kit_add`` in both eras: the baseline of every toolbus endpoint of that era."""
    return [Endpoint(endpoint_key("sdk", era), "sdk", era, url, processes) for era in (ERA_2026, ERA_2025)]


def limit_endpoint(url: str, processes: Mapping[int, str]) -> Endpoint:
    """The limit endpoint ignores MCP headers; it gets the 2026-era request, the larger of the two."""
    return Endpoint(endpoint_key("limit", ERA_2026), "limit", ERA_2026, url, processes)
