"""``WebSocketTransport``: one WebSocket connection via trio-websocket.

``wss://`` URLs use an SSL context with the system trust store
(``ssl.create_default_context()``) unless one is given.  Errors of trio-websocket and of the
network are mapped to :class:`~kora.sync.errors.TransportClosed` at this boundary, with the
reason the reference client would report (``"WebSocket closed with code <n>"`` when the
peer gave none).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, final

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from kora.sync.errors import TransportClosed
from kora.sync.transport import Frame, Transport

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "WebSocketTransport", "open_websocket_transport"]

#: Largest message accepted from the server by default, bytes.
DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024
_CLIENT_CLOSE_REASON: Final = "Client disconnecting"
#: Seconds to wait for the server's close reply (see ``open_websocket_transport``).
DISCONNECT_TIMEOUT: Final = 0.1


def _reason(exc: ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return "WebSocket closed"
    return reason.reason or f"WebSocket closed with code {reason.code}"


@final
class WebSocketTransport:
    """A :class:`~kora.sync.transport.Transport` over a trio-websocket connection.

    Made by :func:`open_websocket_transport`.
    """

    def __init__(self, connection: WebSocketConnection, *, close_timeout: float = 0.1) -> None:
        self._connection = connection
        self._close_timeout = close_timeout

    async def send(self, frame: Frame) -> None:
        try:
            await self._connection.send_message(frame)
        except ConnectionClosed as exc:
            raise TransportClosed(_reason(exc)) from None

    async def receive(self) -> Frame:
        try:
            return await self._connection.get_message()
        except ConnectionClosed as exc:
            raise TransportClosed(_reason(exc)) from None

    async def aclose(self) -> None:
        # trio-websocket waits for the close reply without a limit of its own.
        with trio.move_on_after(self._close_timeout):
            await self._connection.aclose(code=1000, reason=_CLIENT_CLOSE_REASON)


@asynccontextmanager
async def open_websocket_transport(
    url: str,
    *,
    connect_timeout: float = 10.0,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ssl_context: ssl.SSLContext | None = None,
    disconnect_timeout: float = DISCONNECT_TIMEOUT,
) -> AsyncIterator[Transport]:
    """Connect to ``url`` (``ws://`` or ``wss://``) for the duration of the block.

    ``disconnect_timeout`` bounds the wait for the server's close reply.  It is short on
    purpose: when the engine stops a connection, trio-websocket's reader task is cancelled
    together with it, so the reply is never read and the close frame we sent is all the
    server gets (which is all the Kora.js client ever sends, spec 8.13).

    Raises:
        TransportClosed: The connection could not be opened (refused, timed out, rejected
            by the server, TLS failure).
    """
    if url.startswith("wss://") and ssl_context is None:
        ssl_context = ssl.create_default_context()
    try:
        async with open_websocket_url(
            url,
            ssl_context=ssl_context,
            max_message_size=max_message_size,
            connect_timeout=connect_timeout,
            disconnect_timeout=disconnect_timeout,
        ) as connection:
            yield WebSocketTransport(connection, close_timeout=disconnect_timeout)
    except HandshakeError as exc:
        raise TransportClosed(f"WebSocket handshake failed: {exc!r}") from exc
    except (OSError, trio.BrokenResourceError) as exc:
        raise TransportClosed(f"WebSocket connection failed: {exc}") from exc
