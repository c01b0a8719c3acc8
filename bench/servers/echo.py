"""A raw nats-py responder: replies to every request with its own body, nothing else.

The yardstick of the direct bus path (toolbus worker vs this) and the far end of the limit
endpoint. The subject is the bench's own, outside any toolbus prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import nats
import uvloop
from nats.aio.msg import Msg

from bench.servers import READY

SUBJECT = "bench.echo"


async def serve(url: str, subject: str) -> None:
    nc = await nats.connect(url, name="bench-echo")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def on_request(msg: Msg) -> None:
        await nc.publish(msg.reply, msg.data)

    await nc.subscribe(subject, cb=on_request)
    await nc.flush()
    print(READY, flush=True)
    await stop.wait()
    await nc.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nats", required=True, help="NATS URL")
    parser.add_argument("--subject", default=SUBJECT)
    args = parser.parse_args()
    uvloop.run(serve(args.nats, args.subject))


if __name__ == "__main__":
    main()
