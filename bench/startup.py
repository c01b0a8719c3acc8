"""Start-up of ``toolbus up`` as a new user meets it: the example config, from an empty cache and warm.

Each run is ``toolbus up --port P --nats-port N`` with no ``--config`` (so ``examples/toolbus.toml``,
the config a fresh checkout serves: five componentize-py projects to build and two WAT commands),
its state in a fresh directory (``TOOLBUS_STATE_DIR``, so no catalogue survives from an earlier
run). A cold run gets a fresh, empty cache directory (``TOOLBUS_CACHE_DIR``: nothing built, nothing
compiled); the warm runs then reuse the cache the last cold run filled.

The clock starts just before ``up`` is spawned. The gateway's ``/readyz`` is probed every
``POLL_S``: its ``tools`` field is the size of the gateway's catalogue, which is what
``tools/list`` returns, so the first probe that counts a tool and the first that counts them all
give "first tool listed" and "all tools listed"; the banner line in ``up``'s output gives when
``up`` says it is up (every component served, ``/readyz`` 200). The probes' resolution is ``POLL_S``.
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from bench.plan import Plan
from bench.system import READY_BANNER, toolbus_command
from harness.errors import ChildFailed
from harness.processes import Children

POLL_S: Final = 0.1
"""How often ``/readyz`` and ``up``'s output are looked at."""
START_TIMEOUT_S: Final = 600.0
"""A cold start on a busy 2-core machine may take minutes; this only bounds a broken one."""

Progress = Callable[[str], None]


def _free_ports(count: int) -> list[int]:
    """``count`` different TCP ports free right now (bound together: one after another, the
    kernel may hand out the same port twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _listed(port: int) -> int | None:
    """How many tools the gateway on ``port`` lists (None: it does not answer yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as unready:  # 503 until every component is served; the body still counts
        body = json.loads(unready.read())
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        return None  # not listening yet (or, briefly, something else answering there)
    return int(body.get("tools", 0))


def _one_start(name: str, cache_dir: Path, scratch: Path, children: Children) -> dict[str, Any]:
    """Start ``toolbus up`` once; return when the first and all tools were listed and the banner came."""
    port, nats_port = _free_ports(2)
    env = {"TOOLBUS_CACHE_DIR": str(cache_dir), "TOOLBUS_STATE_DIR": str(scratch / f"{name}-state")}
    argv = [*toolbus_command(), "up", "--port", str(port), "--nats-port", str(nats_port)]
    started = time.perf_counter()
    child = children.spawn(name, argv, env=env)
    counts: list[tuple[float, int]] = []
    banner_s: float | None = None
    try:
        while banner_s is None:
            if child.process.poll() is not None:
                raise ChildFailed(f"{name} exited with {child.process.returncode}:\n{child.log_tail()}")
            now = time.perf_counter() - started
            if now > START_TIMEOUT_S:
                raise ChildFailed(f"{name} not up within {START_TIMEOUT_S:g} s:\n{child.log_tail()}")
            listed = _listed(port)
            if listed:
                counts.append((now, listed))
            if READY_BANNER in child.log_text():
                banner_s = time.perf_counter() - started
            else:
                time.sleep(POLL_S)
        total = _listed(port) or 0
        counts.append((time.perf_counter() - started, total))
    finally:
        children.stop(child)
    first_s = next(at for at, listed in counts if listed)
    all_s = next(at for at, listed in counts if listed >= total)
    return {"first_tool_s": first_s, "all_tools_s": all_s, "banner_s": banner_s, "tools": total}


def _summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: statistics.median(s[key] for s in samples) for key in ("first_tool_s", "all_tools_s", "banner_s")} | {
        "tools": samples[-1]["tools"],
        "runs": len(samples),
        "samples": samples,
    }


def measure(scratch: Path, children: Children, plan: Plan, progress: Progress) -> dict[str, Any]:
    """``plan.startup_cold_runs`` starts from an empty cache, then ``plan.startup_warm_runs`` warm ones."""
    cold, warm = [], []
    cache_dir = scratch / "startup-cache-0"
    for run in range(plan.startup_cold_runs):
        cache_dir = scratch / f"startup-cache-{run}"  # fresh and empty: nothing built or compiled
        sample = _one_start(f"startup-cold-{run}", cache_dir, scratch, children)
        cold.append(sample)
        progress(
            f"up from an empty cache: first tool listed at {sample['first_tool_s']:.1f} s, "
            f"all {sample['tools']} at {sample['all_tools_s']:.1f} s, banner at {sample['banner_s']:.1f} s"
        )
    for run in range(plan.startup_warm_runs):
        sample = _one_start(f"startup-warm-{run}", cache_dir, scratch, children)
        warm.append(sample)
        progress(
            f"up warm: first tool listed at {sample['first_tool_s']:.1f} s, "
            f"all {sample['tools']} at {sample['all_tools_s']:.1f} s, banner at {sample['banner_s']:.1f} s"
        )
    return {"poll_s": POLL_S, "cold": _summary(cold), "warm": _summary(warm)}
