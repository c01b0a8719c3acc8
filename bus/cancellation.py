"""Stopping background tasks, when a cancellation can be lost on its way.

``task.cancel(); await task`` hangs forever if the task swallows the cancellation, and a task
blocked in nats-py can: on Python 3.11, ``asyncio.wait_for`` (under ``Subscription.next_msg``,
hence under every JetStream ``fetch`` and request) returns the inner result when it completes in
the same loop iteration as the cancel, and ``next_msg`` turns a cancellation into
``ConnectionClosedError`` when the connection has closed meanwhile — which a retrying loop then
catches. Seen in CI: a task runner's fetch loop outlived its ``stop()``, whose ``await`` hung until
the test timed out. So a stop here cancels again until the task ends, and gives up (saying so)
after a bound rather than hang its caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

log = structlog.get_logger(__name__)

RECANCEL_EVERY_S = 0.2
"""How often a task that has not ended yet is cancelled again."""
PATIENCE_S = 10.0
"""How long a stop waits for its tasks before it leaves them behind."""


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], patience_s: float = PATIENCE_S) -> None:
    """Cancel ``tasks`` and return once they have ended (at most ``patience_s`` later).

    A task that swallowed the cancel is cancelled again at its next wait; one still running after
    ``patience_s`` is logged and left behind, and so is an exception a task ended with (a stop
    must not fail halfway because one of its tasks had failed).
    """
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    deadline = asyncio.get_running_loop().time() + patience_s
    while pending:
        left_s = deadline - asyncio.get_running_loop().time()
        if left_s <= 0:
            log.error("background tasks did not stop", tasks=sorted(task.get_name() for task in pending))
            break
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY_S, left_s))
    for task in tasks:
        if task.done() and not task.cancelled() and (error := task.exception()) is not None:
            log.warning("background task had failed", task=task.get_name(), error=repr(error))
