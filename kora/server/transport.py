"""The frame transports a session runs over: an ASGI WebSocket, or a long-poll mailbox.

A session sees one interface, ``FrameTransport``: receive one frame, send one frame, close
with a WebSocket close code.  Frames are ``str`` (JSON text) or ``bytes`` (a binary frame:
JSON in a binary WebSocket message, or the binary codec once negotiated).  Encoding and
decoding stay in the session, so both transports carry exactly the same messages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, Protocol

import trio

from kora.core.errors import BrokenError

__all__ = [
    "ASGIMessage",
    "ASGIReceive",
    "ASGIScope",
    "ASGISend",
    "CloseCode",
    "Frame",
    "FrameTransport",
    "TransportClosed",
    "WebSocketTransport",
]

ASGIScope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[ASGIMessage]]
ASGISend = Callable[[ASGIMessage], Awaitable[None]]

Frame = str | bytes


class CloseCode:
    """WebSocket close codes the server uses (RFC 6455 and the application range)."""

    NORMAL: Final = 1000
    GOING_AWAY: Final = 1001
    PROTOCOL_ERROR: Final = 1002
    UNSUPPORTED_DATA: Final = 1003
    ABNORMAL: Final = 1006
    INVALID_PAYLOAD: Final = 1007
    POLICY_VIOLATION: Final = 1008
    MESSAGE_TOO_BIG: Final = 1009
    INTERNAL_ERROR: Final = 1011
    TRY_AGAIN_LATER: Final = 1013
    UNAUTHENTICATED: Final = 4401
    RATE_LIMITED: Final = 4429
    MAX_CONNECTIONS: Final = 4029


class TransportClosed(BrokenError):
    """The peer went away, or the transport was closed; no more frames either way."""

    def __init__(self, code: int = CloseCode.ABNORMAL, reason: str = "") -> None:
        super().__init__(f"transport closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class FrameTransport(Protocol):
    """What a session needs from a connection."""

    #: ``"websocket"`` or ``"long_poll"`` (metrics label).
    name: str

    async def receive(self) -> Frame:
        """The next frame from the client.

        Raises:
            TransportClosed: The client disconnected or the transport was closed.
        """
        ...

    async def send(self, frame: Frame) -> None:
        """Send one frame (waits while the peer is slow).

        Raises:
            TransportClosed: The client disconnected or the transport was closed.
        """
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close with a WebSocket close code (idempotent)."""
        ...


class WebSocketTransport:
    """An accepted ASGI WebSocket connection.

    Hypercorn buffers at most ``max_app_queue_size`` received messages for us and stops
    reading the socket when they are not consumed, so a busy session pushes back on the client
    instead of buffering.  Writes go straight to the socket (hypercorn serializes them).
    """

    name = "websocket"

    def __init__(self, receive: ASGIReceive, send: ASGISend) -> None:
        self._receive = receive
        self._send = send
        self._closed: TransportClosed | None = None
        #: hypercorn reported ``websocket.disconnect`` (it sends nothing after that).
        self.disconnected = False
        self.bytes_received = 0
        self.bytes_sent = 0

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def receive(self) -> Frame:
        while self._closed is None:
            message = await self._receive()
            kind = message.get("type")
            if kind == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    self.bytes_received += len(text)
                    return str(text)
                data = bytes(message.get("bytes") or b"")
                self.bytes_received += len(data)
                return data
            if kind == "websocket.disconnect":
                self.disconnected = True
                self._closed = TransportClosed(int(message.get("code", CloseCode.ABNORMAL)))
        raise self._closed

    async def send(self, frame: Frame) -> None:
        if self._closed is not None:
            raise self._closed
        if isinstance(frame, str):
            await self._send({"type": "websocket.send", "text": frame})
        else:
            await self._send({"type": "websocket.send", "bytes": frame})
        self.bytes_sent += len(frame)

    async def close(self, code: int, reason: str) -> None:
        if self._closed is not None:
            return
        self._closed = TransportClosed(code, reason)
        # A cancelled caller must still get the close frame out (bounded: hypercorn writes
        # it to the socket buffer, and a dead socket fails fast).
        with trio.move_on_after(5, shield=True):
            await self._send({"type": "websocket.close", "code": code, "reason": reason[:120]})
