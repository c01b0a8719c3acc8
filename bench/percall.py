"""What one ``tools/call`` costs each process, for several checkouts side by side (an A/B).

For each checkout (a directory with its own ``.venv``), alternately and ``--rounds`` times:
start a nats-server of this run with its monitoring port, run that checkout's ``toolbus up``
against it (the WAT testkit only), load the gateway with wrk (``kit_add``, 2026 era), and read
per call: the CPU time of the gateway, the workers (summed), registry and nats-server (``/proc``), and the
messages and bytes through the nats-server (``/varz``). CPU per call is the figure to compare:
on a busy 2-core machine it moves far less than calls per second does.

    .venv/bin/python -m bench.percall /tmp/old . --rounds 3
    .venv/bin/python -m bench.percall . --spy gateway --profile-out /tmp/gw.raw   # py-spy, raw stacks
    .venv/bin/python -m bench.percall . --tool calc_add          # the componentize-py example, fresh
    .venv/bin/python -m bench.percall . --tool calc_add --pure   # ... declared pure: warm instances
    .venv/bin/python -m bench.percall . --short                  # kit_add declared short (limits.inline)
    .venv/bin/python -m bench.percall OLD . --rounds 4 --bus 64  # the direct bus: NATS requests, 64 in flight

``--bus N`` loads the worker over the bus instead (``bench.busload``: nats-py requests to
``toolbus.call.TOOL`` with N in flight, what the bench's direct bus section sends); the gateway
then idles, and calls/s and CPU per call are the worker's on the direct path.

``--spy ROLE`` samples that role with py-spy (``pip install -e '.[bench]'``) during the load.
``--tool`` picks the component (``kit_*``: the WAT testkit; ``calc_*``: examples/calc, built with
componentize-py on first use); ``--pure`` sets ``reuse_instances = true`` on it, so figures with
it are warm-instance figures, never to be quoted as fresh ones.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from bench import busload, cpu, profile, wrk
from bench.mcp_http import ERA_2026, call_template, request_headers
from bus.embedded import free_port, nats_server_binary

TOOLS: Final = ("kit_add", "calc_add")
"""The tools ``--tool`` offers; both add 2 + 3."""
EXPECT: Final = '"text":"5"'
READY_BANNER: Final = "toolbus is up"
READY_TIMEOUT_S: Final = 300.0
WARM_UP_S: Final = 2.0
ROLES: Final = ("gateway", "worker", "registry", "nats-server")


def component_table(checkout: Path, tool: str, pure: bool, short: bool = False) -> str:
    """The ``[[components]]`` table serving ``tool`` from ``checkout``'s examples."""
    if tool.startswith("kit_"):
        table = f'[[components]]\nname = "kit"\npath = "{checkout / "examples" / "wat" / "testkit.wat"}"\n'
    else:
        table = f'[[components]]\nname = "calc"\nsource = "{checkout / "examples" / "calc"}"\nworld = "calc"\n'
    table += "reuse_instances = true\n" if pure else ""
    # Declared short: calls run on the worker's event loop (a checkout without ``limits.inline`` refuses it).
    return table + ("[components.limits]\ninline = true\ntimeout_s = 1.0\n" if short else "")


@contextmanager
def running(
    checkout: Path, tool: str = "kit_add", pure: bool = False, short: bool = False
) -> Iterator[tuple[str, str, str, dict[str, list[int]]]]:
    """``toolbus up`` of ``checkout`` on a nats-server of its own: (MCP URL, NATS URL, monitor URL, pids by role)."""
    scratch = Path(tempfile.mkdtemp(prefix="percall-"))
    nats_port, monitor_port, http_port = free_port(), free_port(), free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    server_argv = [str(nats_server_binary()), "--addr", "127.0.0.1", "--port", str(nats_port)]
    server_argv += ["-m", str(monitor_port), "--jetstream", "--store_dir", str(scratch / "jetstream")]
    server = subprocess.Popen(
        server_argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = scratch / "toolbus.toml"
    config.write_text(
        f'state_dir = "{scratch / "state"}"\nlog_format = "json"\n\n[nats]\nurl = "{nats_url}"\n\n'
        + component_table(checkout, tool, pure, short),
        encoding="utf-8",
    )
    argv = [str(checkout / ".venv" / "bin" / "toolbus"), "up", "--config", str(config), "--nats", nats_url]
    # In the checkout: its children run ``python -m …``, which imports from the working directory first.
    with (scratch / "up.log").open("w") as log:
        up = subprocess.Popen(
            [*argv, "--port", str(http_port)], cwd=checkout, stdout=subprocess.PIPE, stderr=log, text=True
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        assert up.stdout is not None
        for line in up.stdout:
            if READY_BANNER in line or time.monotonic() > deadline:
                break
        pids: dict[str, list[int]] = {"nats-server": [server.pid]}
        for pid in cpu.descendants(up.pid):  # a worker per core by default: a role may have several
            pids.setdefault(cpu.role(pid), []).append(pid)
        yield f"http://127.0.0.1:{http_port}/mcp", nats_url, f"http://127.0.0.1:{monitor_port}/varz", pids
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
        server.terminate()
        server.wait(10)


def _cpu_by_role(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each role, summed over its processes."""
    return {role: sum(cpu.cpu_seconds(pid) or 0.0 for pid in group) for role, group in pids.items()}


def _varz(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return dict(json.load(answer))


def measure(
    checkout: Path,
    connections: int,
    seconds: float,
    spy: str | None,
    profile_out: Path | None,
    tool: str = "kit_add",
    pure: bool = False,
    short: bool = False,
    bus_in_flight: int | None = None,
) -> dict[str, Any]:
    """One round for ``checkout``: calls/s, CPU µs per call by role, NATS messages and bytes per call."""
    binary = None if bus_in_flight is not None else wrk.ensure_wrk()
    with running(checkout, tool, pure, short) as (url, nats_url, varz_url, pids):
        if binary is None:
            assert bus_in_flight is not None
            subject, body = f"toolbus.call.{tool}", '{"a":2,"b":3}'
            busload.run(busload.BusLoad(nats_url, subject, body, EXPECT, bus_in_flight, WARM_UP_S, 0.0))
            bus = busload.BusLoad(nats_url, subject, body, EXPECT, bus_in_flight, seconds, 0.0)
        else:
            load = wrk.Load(
                url,
                request_headers(ERA_2026, "tools/call", tool, None),
                call_template(ERA_2026, tool, {"a": 2, "b": 3}),
                EXPECT,
            )
            wrk.run(binary, load, connections, WARM_UP_S)
        before_varz = _varz(varz_url)
        before = _cpu_by_role(pids)
        sampler = None
        if spy is not None and profile_out is not None:
            sampler = subprocess.Popen(
                [
                    profile.py_spy() or "py-spy",
                    "record",
                    "-p",
                    str(pids[spy][0]),
                    "-f",
                    "raw",
                    "-o",
                    str(profile_out),
                    "-r",
                    "500",
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        if binary is None:
            result = busload.run(bus)
            result["requests"] = result["calls"]
        else:
            result = wrk.run(binary, load, connections, seconds)
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)
            sampler.wait(30)
        after = _cpu_by_role(pids)
        after_varz = _varz(varz_url)
    calls = max(1, result["requests"])
    return {
        "checkout": str(checkout),
        "tool": tool,
        "pure": pure,
        "short": short,
        "bus_in_flight": bus_in_flight,
        "calls_per_s": result["rps"],
        "errors": result["errors"],
        "cpu_us_per_call": {role: (after[role] - before[role]) / calls * 1e6 for role in ROLES if role in pids},
        "nats_in_msgs_per_call": (after_varz["in_msgs"] - before_varz["in_msgs"]) / calls,
        "nats_in_bytes_per_call": (after_varz["in_bytes"] - before_varz["in_bytes"]) / calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", nargs="+", type=Path, help="checkouts to compare (each with its .venv)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds per checkout (default 1)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--spy", choices=["gateway", "worker", "registry"], help="sample this role with py-spy")
    parser.add_argument("--profile-out", type=Path, help="where py-spy writes (raw collapsed stacks)")
    parser.add_argument("--tool", choices=TOOLS, default="kit_add", help="the tool to call (default kit_add)")
    parser.add_argument("--pure", action="store_true", help="declare the tool pure: warm instances, not fresh")
    parser.add_argument("--short", action="store_true", help="declare the tool's calls short (limits.inline)")
    parser.add_argument("--bus", type=int, metavar="IN_FLIGHT", help="load over NATS with this many requests in flight")
    args = parser.parse_args()
    rounds: dict[str, list[dict[str, Any]]] = {}
    for n in range(args.rounds):
        for checkout in args.checkouts:
            checkout = checkout.resolve()
            out = args.profile_out.with_suffix(f".{checkout.name}.{n}.raw") if args.profile_out else None
            row = measure(
                checkout, args.connections, args.seconds, args.spy, out, args.tool, args.pure, args.short, args.bus
            )
            rounds.setdefault(str(checkout), []).append(row)
            print(json.dumps(row), flush=True)
    print("\nmedians over the rounds:")
    print(f"{'checkout':40} {'calls/s':>8} " + " ".join(f"{role:>12}" for role in ROLES) + "  msgs/call  bytes/call")
    for checkout, rows in rounds.items():
        cpu_cells = " ".join(
            f"{statistics.median(r['cpu_us_per_call'].get(role, 0.0) for r in rows):10.0f}µs" for role in ROLES
        )
        print(
            f"{checkout[-40:]:40} {statistics.median(r['calls_per_s'] for r in rows):8.0f} {cpu_cells}"
            f"  {statistics.median(r['nats_in_msgs_per_call'] for r in rows):9.2f}"
            f"  {statistics.median(r['nats_in_bytes_per_call'] for r in rows):10.0f}"
        )


if __name__ == "__main__":
    main()
