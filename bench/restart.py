"""Worker restart with cached components: from starting ``toolbus worker`` to its ready announcement.

Each configuration (the small WAT component, the componentize-py one, both) runs as a worker
with its own subject prefix against the system's NATS, so it never joins the measured queue
groups. The clock starts just before the process is spawned and stops when its
``WorkerAnnouncement`` with state ``ready`` and nothing ``loading`` arrives on the announce
subject. One unmeasured start first makes sure both caches (build and compile) are warm.

The worker's own log says how long each component took to load; the rest of the time is the
interpreter, imports, the NATS connection and subscribing. ``toolbus worker --help`` is timed
too: the start-up cost of the CLI alone. The worker's CPU time up to ready is recorded beside the
wall time: on a shared machine it moves far less.

Our packages are byte-compiled first (``compileall``), as ``pip install .`` leaves them: a
checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (as this machine's shell sets it) otherwise
compiles ~100 modules from source at every start (worker CPU to ready 580 -> 490 ms with the
bytecode, machine shared), which no installed worker pays.

Run as a module it compares checkouts (each a directory with its own ``.venv``), one start of each
in turn, ``--rounds`` times, on a nats-server of its own: the A/B for a change to the start path.

    .venv/bin/python -m bench.restart /tmp/old . --rounds 15 --setup calc
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import nats
from nats.aio.msg import Msg

from bench.cpu import cpu_seconds
from bench.plan import Plan
from bench.system import CONFIG_DIR, render_config, toolbus_command
from bus.embedded import free_port, nats_server_binary
from bus.subjects import Subjects
from harness.processes import REPO, Child, Children
from schemas.codec import DecodeError, decode
from schemas.wire import WorkerAnnouncement

READY_TIMEOUT_S: Final = 120.0
KIT: Final = '[[components]]\nname = "kit"\npath = "$repo/examples/wat/testkit.wat"\n'
CALC: Final = '[[components]]\nname = "calc"\nsource = "$repo/examples/calc"\nworld = "calc"\n'

PACKAGES: Final = ("bus", "cli", "registry", "schemas", "stores", "workers")
"""What a worker process imports of ours (byte-compiled before timing)."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class WorkerSetup:
    """A worker configuration: a name and its ``[[components]]`` tables."""

    key: str
    components: tuple[str, ...]


SETUPS: Final = (
    WorkerSetup("kit (WAT)", (KIT,)),
    WorkerSetup("calc (componentize-py)", (CALC,)),
    WorkerSetup("calc + kit", (CALC, KIT)),
)


def _component_load_ms(log_text: str) -> dict[str, float]:
    """Per-component load times the worker logged (``component loaded`` events, JSON lines)."""
    loads: dict[str, float] = {}
    for line in log_text.splitlines():
        if '"component loaded"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        loads[str(event.get("component"))] = float(event.get("ms", 0.0))
    return loads


async def _time_starts(
    setup: WorkerSetup,
    index: int,
    nats_url: str,
    scratch: Path,
    children: Children,
    starts: int,
    checkout: Path = REPO,
) -> list[dict[str, Any]]:
    """``starts`` timed starts of ``setup`` from ``checkout`` (after one that warms the caches)."""
    prefix = f"benchrestart{index}"
    components = "\n".join(setup.components).replace("$repo", str(checkout))
    toolbus = toolbus_command() if checkout == REPO else [str(checkout / ".venv" / "bin" / "toolbus")]
    config = render_config(
        CONFIG_DIR / "worker.toml", scratch / f"{prefix}.toml", nats_url=nats_url, prefix=prefix, components=components
    )
    nc = await nats.connect(nats_url, name="bench-restart")
    ready = asyncio.Event()
    ready_at = 0.0

    async def on_announce(msg: Msg) -> None:
        nonlocal ready_at
        try:
            announcement = decode(msg.data, WorkerAnnouncement)
        except DecodeError:
            return
        # A worker announces itself at once and then each component as it loads: ready is when none is left.
        if announcement.state == "ready" and not announcement.loading and not ready.is_set():
            ready_at = time.perf_counter()
            ready.set()

    await nc.subscribe(Subjects(prefix).announce, cb=on_announce)
    await nc.flush()
    samples = []
    try:
        for attempt in range(starts + 1):  # the first start only warms the caches
            ready.clear()
            started = time.perf_counter()
            child: Child = children.spawn(f"{prefix}-{attempt}", [*toolbus, "worker", "--config", str(config)])
            try:
                await asyncio.wait_for(ready.wait(), READY_TIMEOUT_S)
            except TimeoutError:
                raise RuntimeError(
                    f"worker {setup.key} not ready in {READY_TIMEOUT_S:g} s:\n{child.log_tail()}"
                ) from None
            elapsed_ms = (ready_at - started) * 1000
            cpu_s = cpu_seconds(child.pid)  # a few ms after ready: the worker is idle by then
            await asyncio.to_thread(children.stop, child)
            if attempt > 0:
                loads = _component_load_ms(child.log_text())
                cpu_ms = None if cpu_s is None else cpu_s * 1000
                samples.append({"ready_ms": elapsed_ms, "cpu_ms": cpu_ms, "component_load_ms": loads})
    finally:
        await nc.close()
    return samples


def _cli_start_ms() -> float:
    """Wall time of ``toolbus worker --help``: interpreter, imports and verb discovery."""
    argv = [*toolbus_command(), "worker", "--help"]
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(argv, cwd=REPO, capture_output=True, check=True, timeout=60)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(nats_url: str, scratch: Path, children: Children, plan: Plan, progress: Progress) -> dict[str, Any]:
    """Time ``plan.restarts`` starts of each worker setup; return samples and medians."""
    for package in PACKAGES:
        compileall.compile_dir(REPO / package, quiet=1)
    rows = []
    for index, setup in enumerate(SETUPS):
        samples = asyncio.run(_time_starts(setup, index, nats_url, scratch, children, plan.restarts))
        ready_ms = statistics.median(s["ready_ms"] for s in samples)
        cpus = [s["cpu_ms"] for s in samples if s["cpu_ms"] is not None]
        loads = [sum(s["component_load_ms"].values()) for s in samples]
        count = len(setup.components)
        row = {
            "setup": setup.key,
            "components": count,
            "ready_ms": ready_ms,
            "ready_ms_per_component": ready_ms / count,
            "cpu_ms": statistics.median(cpus) if cpus else None,
            "component_load_ms": statistics.median(loads),
            "samples": samples,
        }
        rows.append(row)
        progress(
            f"worker restart {setup.key:<24} ready in {ready_ms:6.0f} ms, {row['cpu_ms'] or 0:4.0f} ms CPU "
            f"({ready_ms / count:.0f} ms per component; loading them took {row['component_load_ms']:.0f} ms)"
        )
    cli_ms = _cli_start_ms()
    progress(f"`toolbus worker --help` alone takes {cli_ms:.0f} ms")
    return {"setups": rows, "cli_start_ms": cli_ms}


def _compare(checkouts: list[Path], setup: WorkerSetup, rounds: int) -> None:
    """One start of ``setup`` from each checkout in turn, ``rounds`` times; print the medians."""
    for checkout in checkouts:
        for package in PACKAGES:
            compileall.compile_dir(checkout / package, quiet=1)
    port = free_port()
    samples: dict[Path, list[dict[str, Any]]] = {checkout: [] for checkout in checkouts}
    with tempfile.TemporaryDirectory(prefix="restart-ab-") as scratch, Children(Path(scratch) / "logs") as children:
        server = [str(nats_server_binary()), "--addr", "127.0.0.1", "--port", str(port), "--jetstream"]
        server += ["--store_dir", str(Path(scratch) / "jetstream")]
        children.spawn("nats", server).wait_for_output("Server is ready", READY_TIMEOUT_S)
        for round_ in range(rounds):
            for index, checkout in enumerate(checkouts):
                [sample] = asyncio.run(
                    _time_starts(setup, index, f"nats://127.0.0.1:{port}", Path(scratch), children, 1, checkout)
                )
                samples[checkout].append(sample)
                ready_ms, cpu_ms = sample["ready_ms"], sample["cpu_ms"]
                print(f"round {round_ + 1} {checkout}: ready {ready_ms:.1f} ms, CPU {cpu_ms:.0f} ms")
    for checkout, taken in samples.items():
        ready = [s["ready_ms"] for s in taken]
        cpus = [s["cpu_ms"] for s in taken if s["cpu_ms"] is not None]
        print(
            f"{checkout}: ready median {statistics.median(ready):.1f} ms (min {min(ready):.1f}), "
            f"CPU median {statistics.median(cpus) if cpus else float('nan'):.0f} ms, {len(ready)} starts"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", nargs="+", type=Path, help="directories with their own .venv")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--setup", choices=("kit", "calc"), default="calc")
    options = parser.parse_args()
    setup = SETUPS[0] if options.setup == "kit" else SETUPS[1]
    _compare([checkout.resolve() for checkout in options.checkouts], setup, options.rounds)


if __name__ == "__main__":
    main()
