"""The one ASGI application of the sync server.

Routes (one port, served by hypercorn's trio worker):

* WebSocket ``/`` and ``/kora-sync``: the sync protocol, one session per connection;
* ``/kora/sync/...``: the same sessions over HTTP long-polling (``kora.server.long_poll``);
* ``GET /health``: ``{"status", "version", "uptime", "sessions"}``;
* ``GET /metrics``: Prometheus text format.

Anything else is 404.  The Origin allow-list, when configured, applies to the WebSocket
upgrade and to the long-poll routes (403 before any session exists).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Final

from kora._version import __version__
from kora.server.context import ServerContext
from kora.server.http import send_bytes, send_json
from kora.server.logs import fields, get_logger
from kora.server.long_poll import LongPollEndpoints
from kora.server.session import ErrorCode, refuse_connection
from kora.server.transport import (
    ASGIReceive,
    ASGIScope,
    ASGISend,
    CloseCode,
    FrameTransport,
    TransportClosed,
    WebSocketTransport,
)

__all__ = ["WEBSOCKET_PATHS", "SyncApp"]

log = get_logger(__name__)

#: Where the WebSocket endpoint answers (the reference's standalone and production paths).
WEBSOCKET_PATHS: Final = frozenset({"/", "/kora-sync"})

RunSession = Callable[[FrameTransport, str], Awaitable[None]]


class SyncApp:
    """ASGI 3 application: ``await app(scope, receive, send)``."""

    def __init__(
        self, ctx: ServerContext, long_poll: LongPollEndpoints, run_session: RunSession
    ) -> None:
        self._ctx = ctx
        self._long_poll = long_poll
        self._run_session = run_session

    async def __call__(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # ------------------------------------------------------------ lifespan

    async def _lifespan(self, receive: ASGIReceive, send: ASGISend) -> None:
        # Resources are opened by ``open_server`` around hypercorn, so there is nothing to do.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------ HTTP

    async def _http(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        path = str(scope["path"])
        method = str(scope["method"]).upper()
        ctx = self._ctx
        if path == "/health":
            if method not in ("GET", "HEAD"):
                await send_json(
                    send, 405, {"error": "method not allowed"}, headers=[("allow", "GET")]
                )
                return
            await send_json(
                send,
                200 if not ctx.shutdown.is_set() else 503,
                {
                    "status": "ok" if not ctx.shutdown.is_set() else "shutting_down",
                    "version": __version__,
                    "uptime": round(ctx.uptime(), 3),
                    "sessions": len(ctx.sessions),
                },
            )
        elif path == "/metrics":
            if method not in ("GET", "HEAD"):
                await send_json(
                    send, 405, {"error": "method not allowed"}, headers=[("allow", "GET")]
                )
                return
            body = ctx.metrics.render().encode("utf-8")
            await send_bytes(send, 200, body, content_type=ctx.metrics.CONTENT_TYPE)
        elif path.startswith(LongPollEndpoints.PREFIX):
            if not ctx.origin_allowed(scope.get("headers", ())):
                ctx.metrics.connections_refused.inc(1, "origin")
                await send_json(send, 403, {"error": "origin not allowed"})
                return
            await self._long_poll.handle(scope, receive, send)
        else:
            await send_json(send, 404, {"error": "not found"})

    # ------------------------------------------------------------ WebSocket

    async def _websocket(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        ctx = self._ctx
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        if scope["path"] not in WEBSOCKET_PATHS:
            await _deny(send, 404, b"not found")
            return
        if not ctx.origin_allowed(scope.get("headers", ())):
            ctx.metrics.connections_refused.inc(1, "origin")
            log.info(
                "refused a WebSocket from a foreign origin",
                extra=fields(client=scope.get("client")),
            )
            await _deny(send, 403, b"origin not allowed")
            return
        if ctx.shutdown.is_set():
            ctx.metrics.connections_refused.inc(1, "shutting_down")
            await _deny(send, 503, b"server shutting down")
            return
        await send({"type": "websocket.accept"})
        transport = WebSocketTransport(receive, send)
        session_id = secrets.token_hex(8)
        if not ctx.sessions.try_register(session_id, "websocket"):
            ctx.metrics.connections_refused.inc(1, "max_connections")
            log.warning("max connections reached", extra=fields(max=ctx.sessions.max_connections))
            await refuse_connection(
                ctx,
                transport,
                code=ErrorCode.MAX_CONNECTIONS,
                message="max connections reached",
                retriable=True,
                close_code=CloseCode.MAX_CONNECTIONS,
            )
            if not transport.disconnected:
                await _drain_until_disconnect(receive)
            return
        try:
            await self._run_session(transport, session_id)
        except TransportClosed:
            pass
        except Exception:
            # Fault isolation: one broken session must not take the server down.
            log.exception("session crashed", extra=fields(session=session_id))
            await transport.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            ctx.sessions.unregister(session_id)
        if not transport.closed:
            await transport.close(CloseCode.NORMAL, "session ended")
        if not transport.disconnected:
            await _drain_until_disconnect(receive)


async def _drain_until_disconnect(receive: ASGIReceive) -> None:
    """Discard what the client still sends until hypercorn reports the disconnect.

    hypercorn queues received messages for the app in a bounded channel and blocks its
    reading loop when that is full.  If the app returned while the client had frames in
    flight, nobody would empty it: the loop would never read the client's close frame, and
    the TCP connection would stay open for the life of the process.  Draining ends when the
    close handshake completes, the client drops, or hypercorn's idle timeout fires.
    """
    while (await receive()).get("type") != "websocket.disconnect":
        pass


async def _deny(send: ASGISend, status: int, body: bytes) -> None:
    """Refuse a WebSocket upgrade with a plain HTTP response (ASGI http.response extension)."""
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
