"""One bench run: start what each section needs, measure, stop it all, write the report.

Order matters on a 2-core machine: the Wasm costs (a cold compile keeps both cores busy) run
before anything else is started, then the start-up section's own ``toolbus up`` runs; the HTTP,
bus, restart, cancel and tools/list sections share one ``toolbus up`` system (plus the comparison
servers); the scaling section runs last, with its own systems, after the first one is gone. A
section that fails is recorded in the report and the others still run; the exit status then says so.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import (
    bus_path,
    cancel,
    chart,
    end_to_end,
    machine,
    merge,
    profile,
    report,
    restart,
    scaling,
    startup,
    tools_list,
    wasm_costs,
    wrk,
)
from bench.cpu import labelled
from bench.plan import Plan
from bench.servers import READY
from bench.servers.echo import SUBJECT as ECHO_SUBJECT
from bench.system import CONFIG_DIR, ToolbusSystem
from bench.targets import AT_CONNECTIONS
from bus.embedded import free_port
from harness.processes import Child, Children

SERVER_READY_TIMEOUT_S = 30.0
BACKGROUND_WARNING_CORES = 0.2
PROFILED = ("toolbus-2026", "toolbus-2025", "toolbus-calc-2026")
"""The endpoints py-spy samples (one extra run each): kit_add in both eras, calc_add fresh."""
"""Warn when the machine is this busy (in cores) before the bench starts anything."""


@dataclass(frozen=True)
class Options:
    """What ``bench/run.py`` was asked to do."""

    plan: Plan
    sections: tuple[str, ...]
    out_dir: Path
    quick: bool
    keep_logs: bool
    profile: bool = True
    """Sample the gateway and the worker with py-spy under load (extra runs; skipped without py-spy)."""
    merge: bool = False
    """Fold the sections run into the report already in ``out_dir`` (see ``bench.merge``)."""


class Progress:
    """Prints one line per step, with the time since the run started."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{int(elapsed // 60):02d}:{elapsed % 60:04.1f}] {message}", flush=True)


class Run:
    """The state of one bench run: options, results so far, children, failures."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.plan = options.plan
        self.progress = Progress()
        self.scratch = Path(tempfile.mkdtemp(prefix="toolbus-bench-"))
        self.children = Children(self.scratch / "logs")
        self.failures: dict[str, str] = {}
        self.results: dict[str, Any] = {
            "schema": 1,
            "command": " ".join(["python", *sys.argv]),
            "quick": options.quick,
            "sections": list(options.sections),
            "plan": options.plan.as_dict(),
        }

    def wants(self, *sections: str) -> bool:
        return any(section in self.options.sections for section in sections)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Run one section; an error is recorded (with its traceback on the console) and the run goes on."""
        self.progress(f"— {name} —")
        try:
            yield
        except Exception as exc:  # a failed section must not cost the others; the report names it
            traceback.print_exc()
            self.failures[name] = f"{type(exc).__name__}: {exc}"[:2000]
            self.progress(f"{name} FAILED: {self.failures[name][:300]}")

    def spawn_server(self, name: str, module: str, *args: str) -> Child:
        return self.children.spawn(name, [sys.executable, "-m", module, *args])


def _http(run: Run, system: ToolbusSystem, echo: Child, binary: str) -> None:
    sdk_port, limit_port = free_port(), free_port()
    sdk = run.spawn_server("sdk-server", "bench.servers.sdk", "--port", str(sdk_port))
    limit = run.spawn_server(
        "limit-server", "bench.servers.limit", "--port", str(limit_port), "--nats", system.nats_url
    )
    try:
        system_processes = system.processes()
        nats_pid = next(pid for pid, name in system_processes.items() if name == "nats-server")
        endpoints = [
            *end_to_end.toolbus_endpoints(system.mcp_url, system_processes),
            *end_to_end.sdk_endpoints(f"http://127.0.0.1:{sdk_port}/mcp", labelled([sdk.pid])),
            end_to_end.limit_endpoint(f"http://127.0.0.1:{limit_port}/mcp", labelled([limit.pid, echo.pid, nats_pid])),
        ]
        for endpoint in endpoints:
            end_to_end.probe(endpoint)
        run.progress("all endpoints answer 2 + 3 = 5; measuring")
        runs = end_to_end.measure(binary, endpoints, run.plan, run.progress)
        run.results["http"] = {"runs": runs, "summary": end_to_end.summarize(runs)}
        if run.options.profile:
            sampled = [e for e in endpoints if e.kind == "toolbus" and e.key in PROFILED]
            _profile(run, system, sampled, binary)
    finally:
        run.children.stop(limit)
        run.children.stop(sdk)


def _wasm(run: Run) -> None:
    run.results["wasm"] = wasm_costs.run(run.plan.cold_compiles, run.plan.instantiations)
    for t in run.results["wasm"]["tools"]:
        us = {key: t[key]["p50"] * 1000 for key in ("fresh_instance_ms", "first_call_ms", "call_ms")}
        run.progress(
            f"{t['tool']} ({t['kind']}, {t['language']}): cold compile {t['cold_compile_ms']['p50']:.1f} ms, "
            f"cached load {t['cached_load_ms']['p50']:.2f} ms, fresh instance {us['fresh_instance_ms']:.0f} µs, "
            f"guest call {us['first_call_ms']:.0f} µs, whole call {us['call_ms']:.0f} µs"
        )
    for skipped in run.results["wasm"]["skipped"]:
        run.progress(f"{skipped['tool']} ({skipped['kind']}, {skipped['language']}) SKIPPED: {skipped['reason']}")


def _profile(run: Run, system: ToolbusSystem, endpoints: list[end_to_end.Endpoint], binary: str) -> None:
    if profile.py_spy() is None:
        run.progress("py-spy not installed (pip install py-spy): no CPU profile of the gateway and worker")
        return
    pids = {"gateway": system.pid_of("gateway"), "worker": system.pid_of("worker")}
    profiles = {}
    for endpoint in endpoints:
        client = endpoint.client()
        try:
            load = endpoint.load(client.handshake())
            sampled = profile.under_load(
                binary, load, AT_CONNECTIONS, pids, run.plan.http_duration_s, run.scratch / "profiles"
            )
        finally:
            client.end_session()
            client.close()
        profiles[endpoint.key] = sampled
        for role, folded in sampled.get("processes", {}).items():
            top = ", ".join(f"{f['function'].split(' (')[0]} {f['share']:.0%}" for f in folded.get("self", [])[:4])
            run.progress(f"py-spy {endpoint.key} {role}: {top or folded.get('error', 'no samples')}")
    run.results["profile"] = profiles


def _with_system(run: Run) -> None:
    """The sections that share one ``toolbus up`` system."""
    system = ToolbusSystem(
        "system",
        CONFIG_DIR / "system.toml",
        run.scratch,
        values={"short_components": end_to_end.short_components()},
    )
    run.progress("starting toolbus up (bench/config/system.toml)")
    system.start(run.children)
    run.progress(f"toolbus is up: {system.mcp_url}, {system.nats_url}")
    echo: Child | None = None
    try:
        if run.wants("restart"):
            with run.section("restart"):
                run.results["restart"] = restart.measure(
                    system.nats_url, run.scratch, run.children, run.plan, run.progress
                )
        if run.wants("http", "bus"):
            echo = run.spawn_server("echo-responder", "bench.servers.echo", "--nats", system.nats_url)
            echo.wait_for_output(READY, SERVER_READY_TIMEOUT_S)
        if run.wants("http"):
            with run.section("http"):
                assert echo is not None
                binary = wrk.ensure_wrk()
                _http(run, system, echo, binary)
        if run.wants("bus"):
            with run.section("bus"):
                assert echo is not None
                processes = {**system.processes(), **labelled([echo.pid])}
                short = system.subjects.call("kitshort_add") if end_to_end.short_calls_supported() else None
                targets = bus_path.targets(system.subjects.call(end_to_end.TOOL), ECHO_SUBJECT, short)
                run.results["bus"] = bus_path.measure(system.nats_url, targets, processes, run.plan, run.progress)
        if run.wants("cancel"):  # before `list` registers its 1,000 tools
            with run.section("cancel"):
                run.results["cancel"] = cancel.measure(
                    system.mcp_url, system.nats_url, system.subjects, system.pids_of("worker"), run.plan, run.progress
                )
        if run.wants("list"):
            with run.section("list"):
                run.results["list"] = tools_list.measure(
                    system.mcp_url, system.nats_url, system.subjects, run.plan, run.progress
                )
    finally:
        if echo is not None:
            run.children.stop(echo)
        system.stop(run.children)


def execute(options: Options) -> int:
    """Run the sections asked for and write the report; return the exit status."""
    run = Run(options)
    wrk_version = None
    if run.wants("http"):
        wrk_version = wrk.version(wrk.ensure_wrk())
    run.results["machine"] = machine.describe(wrk_version)
    background = run.results["machine"]["background_cores_busy"]
    if background > BACKGROUND_WARNING_CORES:
        run.progress(
            f"warning: {background:.2f} cores are busy before the bench starts anything; "
            "other work on this machine will lower and scatter the figures"
        )
    run.progress(f"sections: {', '.join(options.sections)}; scratch directory {run.scratch}")
    try:
        with run.children:
            if run.wants("wasm"):
                with run.section("wasm"):
                    _wasm(run)
            if run.wants("startup"):  # its own systems, before the shared one: a cold build takes both cores
                with run.section("startup"):
                    run.results["startup"] = startup.measure(run.scratch, run.children, run.plan, run.progress)
            if run.wants("http", "bus", "restart", "cancel", "list"):
                with run.section("system"):
                    _with_system(run)
            if run.wants("scaling"):
                with run.section("scaling"):
                    run.results["scaling"] = scaling.measure(run.scratch, run.children, run.plan, run.progress)
    except BaseException:
        print(f"bench: logs of every process are in {run.scratch / 'logs'}", file=sys.stderr)
        raise
    finally:
        run.results["duration_s"] = round(time.monotonic() - run.progress.started, 1)
        run.results["failures"] = run.failures
    results, plan = run.results, run.plan
    if options.merge:
        if run.failures:
            run.progress(f"a section failed: the report in {options.out_dir} is left as it was")
            run.progress(f"logs of every process are in {run.scratch / 'logs'}")
            return 1
        results = merge.merge(merge.previous(options.out_dir), run.results)
        plan = Plan.from_dict(results["plan"])  # the text of sections not run describes the earlier run
    paths = report.write(results, plan, options.out_dir)
    written = list(paths.values())
    if not options.merge or run.wants("http", "bus"):  # the chart shows only those two
        png = chart.draw(results, options.out_dir / "performance.png")
        written += [png] if png else []
    run.progress("wrote " + ", ".join(str(p) for p in written))
    _print_targets(results)
    if run.failures or options.keep_logs:
        run.progress(f"logs of every process are in {run.scratch / 'logs'}")
    else:
        shutil.rmtree(run.scratch, ignore_errors=True)
    return 1 if run.failures else 0


def _print_targets(results: dict[str, Any]) -> None:
    for target in results["targets"]:
        verdict = {True: "pass", False: "FAIL", None: "—"}[target["pass"]]
        measured = "—" if target["measured"] is None else f"{target['measured']:.2f}"
        goal = f"{target['op']} {target['threshold']:g}"
        print(f"  {verdict:<4}  {target['target']}: {measured} {target['unit']} (goal {goal})")
