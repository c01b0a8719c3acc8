"""The gateway's outermost layer: any exception becomes a JSON-RPC error, never a traceback.

Starlette's ``ServerErrorMiddleware`` idea, for an MCP endpoint: whatever escapes the layers
inside (the front door, the hot path, the SDK, a bug of ours) is logged here with its traceback
and answered ``500`` with a JSON-RPC ``-32603`` error that says only where to look. If the
response had started already, the connection is ended instead (nothing sane can be appended to
half an answer). The SDK's own handler errors are mapped inside it (``gateway.server``); this is
the net under everything else.
"""

from __future__ import annotations

from typing import Final

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import INTERNAL_ERROR
from schemas.codec import encode

log = structlog.get_logger(__name__)

INTERNAL_ERROR_MESSAGE: Final = "internal error in the gateway; see the gateway's logs"
_ERROR: Final = {"code": INTERNAL_ERROR, "message": INTERNAL_ERROR_MESSAGE}
_BODY: Final = encode({"jsonrpc": "2.0", "id": None, "error": _ERROR})


class ErrorBoundary:
    """ASGI middleware: the one place an exception turns into a JSON-RPC error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            log.exception("request failed", path=scope.get("path"), method=scope.get("method"))
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]
            try:
                await send({"type": "http.response.start", "status": 500, "headers": headers})
            except RuntimeError:
                # Half an answer is out already (the server refuses a second start): let the
                # server end the connection. Asking the server beats wrapping every ``send`` of
                # every request to track whether the response started.
                raise exc from None
            await send({"type": "http.response.body", "body": _BODY})
