"""The per-call CPU budget hop by hop: a role's CPU µs per call split by a py-spy sample of it.

``bench.percall`` gives each role's CPU µs per call (``/proc``, exact) and, with ``--spy ROLE
--profile-out FILE``, a raw py-spy sample of that role under the same load. Each sampled stack is
charged to one hop: the first frame, from the leaf up, that a hop's rule names (so a socket
write inside nats-py's flusher is NATS, the same write inside uvicorn is HTTP). Stacks no rule
names are the event loop's own work. A hop's µs per call is its share of the samples times the
role's µs per call: a share of CPU, not a timed span, so the hops of a role sum to its total.

    .venv/bin/python -m bench.budget measure . --tool kit_add     # both spied runs, one table
    .venv/bin/python -m bench.percall . --spy worker --profile-out /tmp/w.raw > /tmp/w.jsonl
    .venv/bin/python -m bench.budget split worker /tmp/w.*.raw --us-per-call 296

py-spy samples threads that are not idle (no ``--gil``): a guest thread inside wasmtime counts,
under the Python function that called into it.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Final

from bench import percall

Rule = tuple[str, tuple[str, ...]]
"""A hop and the substrings of a py-spy frame (``function (path/file.py:line)``) that name it."""

GATEWAY: Final[tuple[Rule, ...]] = (
    ("call log line", ("gateway/call_log.py", "structlog/")),
    ("audit trail (JetStream publish, acks)", ("gateway/audit_trail.py", "nats/js/")),
    ("principal signature", ("bus/principal.py",)),
    ("metrics and tracing", ("gateway/metrics.py", "gateway/tracing.py", "prometheus_client/", "opentelemetry/")),
    ("NATS request/reply (nats-py: headers, publish, flush, reply, wait_for)", ("nats/", "bus/")),
    ("MCP envelope checks (the SDK)", ("mcp/",)),
    ("HTTP parse and response write (uvicorn, httptools)", ("uvicorn/", "httptools", "gateway/connections.py")),
    ("gateway pipeline (front door, views, auth, policy, validation, hot path)", ("gateway/", "schemas/")),
)
WORKER: Final[tuple[Rule, ...]] = (
    ("call log line and metrics", ("workers/telemetry/", "structlog/", "prometheus_client/")),
    ("sandbox: Store, WASI, limits", ("Store.__init__", "WasiConfig", "set_wasi", "set_limits", "_store.py")),
    ("sandbox: instantiate", ("instantiate",)),
    ("sandbox: guest call, post_return, values", ("wasmtime/component/_func", "func_call", "post_return")),
    ("sandbox: our Python and the rest of wasmtime-py", ("workers/sandbox/", "wasmtime/")),
    ("principal signature", ("bus/principal.py",)),
    # A guest thread woken for a call but waiting for its core (a pinned worker's loop holds it)
    # is sampled at its queue's get: the hand-off, not the worker's own work.
    (
        "hand-off to a guest thread and back",
        ("concurrent/futures/", "threading.py", "call_soon_threadsafe", "workers/guest_threads.py"),
    ),
    ("NATS receive, reply, flush (nats-py)", ("nats/", "bus/")),
    ("admission, headers, decode, validate, reply encode", ("workers/", "schemas/", "msgspec")),
)
RULES: Final = {"gateway": GATEWAY, "worker": WORKER}
LOOP: Final = "event loop and asyncio (no rule named a frame)"


def hop_of(frames: list[str], rules: tuple[Rule, ...]) -> str:
    """The hop of one stack (root first): the first rule naming a frame, from the leaf up."""
    for frame in reversed(frames):
        for hop, needles in rules:
            if any(needle in frame for needle in needles):
                return hop
    return LOOP


def split(raw: str, rules: tuple[Rule, ...]) -> dict[str, float]:
    """Share of samples per hop in py-spy's raw output (``frame;frame;... count`` lines), largest first."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            counts[hop_of(stack.split(";"), rules)] += int(count_text)
    total = sum(counts.values())
    return {hop: n / total for hop, n in counts.most_common()} if total else {}


def measure(checkout: Path, tool: str, pure: bool, seconds: float, short: bool = False) -> list[dict[str, Any]]:
    """Two ``bench.percall`` rounds, one spying on the gateway and one on the worker: rows of the budget."""
    rows: list[dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="budget-"))
    for role in ("gateway", "worker"):
        raw = scratch / f"{role}.raw"
        round_ = percall.measure(checkout.resolve(), 16, seconds, role, raw, tool, pure, short)
        us = round_["cpu_us_per_call"]
        text = "\n".join(path.read_text(errors="replace") for path in scratch.glob(f"{role}*.raw"))
        for hop, share in split(text, RULES[role]).items():
            rows.append(
                {"hop": hop, "process": role, "share": share, "us": share * us[role], "rps": round_["calls_per_s"]}
            )
        if role == "worker":  # the processes py-spy does not split, from the same round
            rows += [
                {"hop": r, "process": r, "share": None, "us": us[r], "rps": None}
                for r in ("nats-server", "registry")
                if r in us
            ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    split_ = verbs.add_parser("split", help="split py-spy raw outputs of one role")
    split_.add_argument("role", choices=sorted(RULES))
    split_.add_argument("raw", nargs="+", type=Path, help="py-spy raw outputs of that role (summed)")
    split_.add_argument("--us-per-call", type=float, help="the role's CPU µs per call (bench.percall)")
    measure_ = verbs.add_parser("measure", help="run bench.percall twice (gateway, worker spied) and print the budget")
    measure_.add_argument("checkout", type=Path, help="a checkout with its own .venv")
    measure_.add_argument("--tool", default="kit_add", help="kit_add or calc_add")
    measure_.add_argument("--pure", action="store_true", help="declare the tool pure: warm instances")
    measure_.add_argument("--short", action="store_true", help="declare the tool's calls short (limits.inline)")
    measure_.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    if args.verb == "split":
        shares = split("\n".join(p.read_text(errors="replace") for p in args.raw), RULES[args.role])
        for hop, share in shares.items():
            us = f"{share * args.us_per_call:6.0f} µs" if args.us_per_call else ""
            print(f"{share:6.1%} {us}  {hop}")
        return
    rows = measure(args.checkout, args.tool, args.pure, args.seconds, args.short)
    print("| hop | process | share | µs per call |\n|---|---|---|---|")
    for row in rows:
        share = "—" if row["share"] is None else f"{row['share']:.0%}"
        print(f"| {row['hop']} | {row['process']} | {share} | {row['us']:.0f} |")
    print(f"| **total** | | | **{sum(row['us'] for row in rows):.0f}** |")


if __name__ == "__main__":
    main()
