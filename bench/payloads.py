"""Claim-check costs: storing and reading one body of 10 and 64 MiB through the Object Store.

``python -m bench.payloads`` starts an embedded nats-server (JetStream, file storage, in a
temporary directory), then for each size times ``Payloads.put`` and ``Payloads.get``
(``bus.payloads``) five times and prints the medians. One host: the figures are the Object
Store's and nats-py's cost, without a network.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Final

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.payloads import Payloads
from bus.subjects import Subjects

MIB: Final = 1024 * 1024
SIZES_MIB: Final = (10, 64)
ROUNDS: Final = 5


async def measure(url: str) -> None:
    nc = await connect(url, name="bench-payloads")
    try:
        payloads = Payloads(nc, Subjects("benchpayloads"), max_bytes=max(SIZES_MIB) * MIB)
        await payloads.bucket()
        for size_mib in SIZES_MIB:
            body = os.urandom(size_mib * MIB)
            puts, gets = [], []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                name, digest = await payloads.put(body)
                stored = time.perf_counter()
                assert await payloads.get(name, digest) == body
                puts.append(stored - started)
                gets.append(time.perf_counter() - stored)
                await payloads.delete(name)
            print(f"{size_mib:>3} MiB  put {statistics.median(puts):.3f} s  get {statistics.median(gets):.3f} s")
    finally:
        await nc.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as state:
        server = EmbeddedNatsServer(state_dir=Path(state))
        server.start()
        try:
            asyncio.run(measure(server.url))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
