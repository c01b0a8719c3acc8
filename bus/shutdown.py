"""The shutdown signal: how a long-running role learns it should stop (SIGTERM or SIGINT).

Here and not beside the rest of the process wiring in ``cli/``: role processes wait on it
themselves (``workers.runner``), and a role never imports the CLI that sits above it.
"""

from __future__ import annotations

import asyncio
import signal


async def wait_for_shutdown_signal() -> str:
    """Return the name of the first SIGTERM or SIGINT this process receives."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[str] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig.name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await received
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
