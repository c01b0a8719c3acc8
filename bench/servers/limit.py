"""The limit: a bare Starlette + msgspec endpoint that does one nats-py request per call.

It decodes the JSON-RPC ``tools/call`` body, sends the arguments to the echo responder (another
process), adds the echoed numbers and answers a JSON-RPC result shaped like toolbus's. No MCP
layer at all: what one HTTP hop plus one NATS round trip cost in Python on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats
import uvicorn
from nats.aio.client import Client as NatsClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.servers.echo import SUBJECT

REQUEST_TIMEOUT_S = 5.0


class Params(msgspec.Struct):
    name: str
    arguments: dict[str, Any] = {}


class CallRequest(msgspec.Struct):
    id: int | str
    method: str
    params: Params
    jsonrpc: str = "2.0"


class Sum(msgspec.Struct):
    a: int
    b: int


_decode_request = msgspec.json.Decoder(CallRequest).decode
_decode_sum = msgspec.json.Decoder(Sum).decode
_encode = msgspec.json.Encoder().encode


def build_app(nats_url: str, subject: str) -> Starlette:
    """The endpoint at ``/mcp``; NATS is connected in the lifespan."""
    state: dict[str, NatsClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        state["nc"] = await nats.connect(nats_url, name="bench-limit")
        yield
        await state["nc"].drain()

    async def call(request: Request) -> Response:
        message = _decode_request(await request.body())
        reply = await state["nc"].request(subject, _encode(message.params.arguments), timeout=REQUEST_TIMEOUT_S)
        args = _decode_sum(reply.data)
        total = args.a + args.b
        result = {"content": [{"type": "text", "text": str(total)}], "structuredContent": total, "isError": False}
        return Response(_encode({"jsonrpc": "2.0", "id": message.id, "result": result}), media_type="application/json")

    return Starlette(routes=[Route("/mcp", call, methods=["POST"])], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nats", required=True, help="NATS URL")
    parser.add_argument("--subject", default=SUBJECT)
    args = parser.parse_args()
    app = build_app(args.nats, args.subject)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning")


if __name__ == "__main__":
    main()
