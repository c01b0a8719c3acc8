"""``toolbus worker``: load the configured components and serve their tools on the bus.

Registering the verb imports nothing heavy (``toolbus worker --help`` stays cheap); the settings,
the bus, wasmtime and the worker's modules load only when the worker runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cli.options import add_common_options, run_verb

if TYPE_CHECKING:
    from concurrent.futures import Future

    from schemas.config import Settings
    from workers.sandbox import EngineHost
    from workers.sources import Loading


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``worker`` verb."""
    parser = subparsers.add_parser("worker", help="serve the configured Wasm components' tools")
    add_common_options(parser)
    parser.add_argument("--concurrency", type=int, help="guests running at once (default: number of cores)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on this port (default from config: off); one port per worker process",
    )
    parser.add_argument(
        "--cpu",
        type=int,
        metavar="CORE",
        help="run on this core only (toolbus up pins each worker to one: [worker] pin_to_cores)",
    )
    # The worker turns cyclic garbage collection back on once it is connected (cli.main.main).
    parser.set_defaults(run=run, resumes_gc=True)


def run(args: argparse.Namespace) -> int:
    if args.cpu is not None and (problem := _core_problem(args.cpu)):
        import sys

        print(f"toolbus worker: --cpu {args.cpu}: {problem}", file=sys.stderr)
        return 2
    worker: dict[str, int] = {}
    if args.concurrency:
        worker["concurrency"] = args.concurrency
    if args.metrics_port is not None:
        worker["metrics_port"] = args.metrics_port
    import concurrent.futures  # here, as every import of this module: `toolbus worker --help` only parses
    import threading

    started: list[Loading] = []

    def begin(settings: Settings) -> None:
        # Start loading the components now, before the bus and the event loop are imported: the
        # loads (mostly reading, hashing and deserializing Wasm, which release the GIL) run on
        # another core meanwhile instead of after (issue 17; calc's are ~30 ms of CPU). The engine
        # is made on a thread of its own: wasmtime takes ~4 ms to make it (reserving its pooled
        # slots) without the GIL, while this thread goes on importing and the loaders find their
        # Wasm; they wait for the engine only to load it.
        from workers.sandbox import EngineHost
        from workers.sources import Loading

        engine: Future[EngineHost] = concurrent.futures.Future()

        def make_engine() -> None:
            try:
                host = EngineHost()
                host.start()
                engine.set_result(host)
            except BaseException as exc:  # raised again where the engine is used, as if here
                engine.set_exception(exc)

        threading.Thread(target=make_engine, name="engine", daemon=True).start()
        started.append(Loading(settings, engine))

    return run_verb(args, lambda settings, args: _serve(settings, started[0], args.cpu), begin=begin, worker=worker)


def _core_problem(core: int) -> str | None:
    """Why this process cannot be pinned to ``core``, or None."""
    from schemas.config import allowed_cores

    allowed = allowed_cores()
    if allowed is None:
        return "this system cannot pin a process to a core"
    return None if core in allowed else f"not a core this process may run on {allowed}"


def _pin(core: int) -> None:
    """Pin this process to ``core``: every thread it has, and so every thread they start."""
    import os

    # On Linux an affinity belongs to a thread (0 is the calling one), and new threads inherit it.
    threads = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["0"]
    for thread in threads:
        os.sched_setaffinity(int(thread), {core})


async def _serve(settings: Settings, started: Loading, core: int | None) -> int:
    import structlog

    from workers.errors import WorkersError
    from workers.runner import serve

    # Pinned only once every component is served: a start uses every core (its loads run beside
    # its imports), a call of a pinned worker never two (docs/operations.md, pin_to_cores).
    served = None if core is None else (lambda: _pin(core))
    try:
        await serve(settings, started, served=served)
    except WorkersError as exc:
        structlog.get_logger(__name__).error("worker cannot start", error=str(exc))
        return 1
    return 0
