"""A toolbus process's life: its event loop, and ending with the ``toolbus up`` that started it.

Waiting for the shutdown signal is ``bus.shutdown``: the roles themselves wait on it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

EXIT_INTERRUPTED = 130
"""128 + SIGINT: what a shell reports for a program Ctrl-C stopped."""


def stop_with_supervisor(supervisor_pid: int | None) -> bool:
    """Have the kernel SIGTERM this process when ``toolbus up`` (``supervisor_pid``, its parent)
    dies, even by kill -9, so no role runs on unsupervised (Linux; elsewhere nothing). Returns
    False when the supervisor is already gone: nobody would signal us, so the caller exits."""
    if supervisor_pid is None or not sys.platform.startswith("linux"):
        return True
    # Here, not at the top: only a child of `toolbus up` needs it. bus.embedded must not import
    # nats-py (or bus.errors) at its top: a worker imports nats-py while its components load
    # (cli.worker), not before it has read its settings (tests/cli/test_main.py).
    from bus.embedded import die_with_parent

    die_with_parent()
    return os.getppid() == supervisor_pid  # checked after the request: no window in between


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop: every role is I/O-bound on the loop, and uvloop's is much cheaper."""
    import uvloop  # here: a worker imports it while its components load (cli.worker)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
