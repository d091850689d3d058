"""``WebSocketTransport``: one WebSocket connection, wsproto over a trio stream.

The transport owns the connection's byte stream and reads it only when asked: ``receive()``
reads the socket in the caller's task (the connection actor's inbound pump), so a frame
reaches the engine without a reader task and a channel in between, and ``aclose()`` can
finish the close handshake itself (send the close frame, read until the server's reply)
whoever was reading before.  That is why closing a connected app takes one round trip, not
a timeout: a reader task of a WebSocket library would be cancelled together with the
connection and the reply would never be read.

``wss://`` URLs use an SSL context with the system trust store
(``ssl.create_default_context()``) unless one is given.  Errors of the network and of the
WebSocket protocol are mapped to :class:`~kora.sync.errors.TransportClosed` at this
boundary, with the reason the reference client would report (``"WebSocket closed with code
<n>"`` when the peer gave none; 1006 when the connection was lost without a close frame).
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, final

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from kora.sync.errors import TransportClosed
from kora.sync.transport import Frame, Transport

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DISCONNECT_TIMEOUT",
    "WebSocketTransport",
    "open_websocket_transport",
]

#: Largest message accepted from the server by default, bytes.
DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024
#: Seconds ``aclose()`` waits for the server's close reply (a healthy server answers in one
#: round trip; this only bounds a server or network that went silent).
DISCONNECT_TIMEOUT: Final = 0.5
#: Bytes asked of the socket per read: a catch-up's large frames arrive in a few reads.
RECEIVE_SIZE: Final = 256 * 1024
_CLIENT_CLOSE_REASON: Final = "Client disconnecting"
_NORMAL_CLOSURE: Final = 1000
_MESSAGE_TOO_BIG: Final = 1009
_ABNORMAL_CLOSURE: Final = 1006


def _close_reason(code: int, reason: str | None) -> str:
    return reason or f"WebSocket closed with code {code}"


@final
class WebSocketTransport:
    """A :class:`~kora.sync.transport.Transport` over one WebSocket connection.

    Made by :func:`open_websocket_transport`, or by :meth:`handshake` over any connected
    trio stream (tests use an in-memory stream).  ``receive()`` may run in one task while
    ``send()`` runs in another; two concurrent ``receive()`` calls are not supported.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        connection: WSConnection,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        close_timeout: float = DISCONNECT_TIMEOUT,
    ) -> None:
        self._stream = stream
        self._ws = connection
        self._max_message_size = max_message_size
        self._close_timeout = close_timeout
        self._send_lock = trio.Lock()
        self._messages: deque[Frame] = deque()
        self._parts: list[Frame] = []
        self._part_size = 0
        #: Why the connection ended (set once: a close frame either way, or a lost stream).
        self._ended: str | None = None
        #: A send was interrupted half-way: the stream holds a partial frame, so nothing
        #: more may be written to it (not even a close frame).
        self._torn = False
        self._stream_closed = False

    @classmethod
    async def handshake(
        cls,
        stream: trio.abc.Stream,
        *,
        host: str,
        target: str,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        close_timeout: float = DISCONNECT_TIMEOUT,
    ) -> WebSocketTransport:
        """Run the opening handshake on ``stream`` (connected, owned by the result).

        Raises:
            TransportClosed: The server refused the upgrade or the stream failed.
        """
        connection = WSConnection(ConnectionType.CLIENT)
        transport = cls(
            stream, connection, max_message_size=max_message_size, close_timeout=close_timeout
        )
        await transport._write(connection.send(Request(host=host, target=target)))
        accepted = False
        while not accepted:
            data = await transport._read_bytes()
            try:
                connection.receive_data(data)
                events = list(connection.events())
            except RemoteProtocolError as exc:
                raise TransportClosed(f"WebSocket handshake failed: {exc}") from None
            for event in events:
                if isinstance(event, AcceptConnection):
                    accepted = True
                elif isinstance(event, RejectConnection):
                    raise TransportClosed(
                        f"WebSocket handshake failed: the server answered HTTP {event.status_code}"
                    )
                elif accepted:  # frames that came with the response
                    await transport._handle(event)
            if data is None and not accepted:
                raise TransportClosed("WebSocket handshake failed: the connection was closed")
        return transport

    # ------------------------------------------------------------------ Transport

    async def send(self, frame: Frame) -> None:
        if self._ended is not None:
            raise TransportClosed(self._ended)
        event = TextMessage(frame) if isinstance(frame, str) else BytesMessage(frame)
        try:
            data = self._ws.send(event)
        except LocalProtocolError:
            raise TransportClosed(self._ended or "WebSocket closed") from None
        await self._write(data)

    async def receive(self) -> Frame:
        if self._messages:
            # Several frames came in one read: still a checkpoint per frame.
            await trio.lowlevel.checkpoint()
            return self._messages.popleft()
        while True:
            if self._ended is not None:
                raise TransportClosed(self._ended)
            await self._receive_some()
            if self._messages:
                return self._messages.popleft()

    async def aclose(self) -> None:
        """Finish the close handshake (bounded by the close timeout), then close the stream.

        Shielded: it always closes, even in a cancelled scope.
        """
        if self._stream_closed:
            return
        with trio.CancelScope(shield=True):
            try:
                with trio.move_on_after(self._close_timeout):
                    await self._close_handshake()
            finally:
                self._stream_closed = True
                self._ended = self._ended or "WebSocket closed"
                await trio.aclose_forcefully(self._stream)

    # ------------------------------------------------------------------ internals

    async def _close_handshake(self) -> None:
        if self._ws.state is ConnectionState.OPEN and not self._torn:
            data = self._ws.send(CloseConnection(_NORMAL_CLOSURE, _CLIENT_CLOSE_REASON))
            self._ended = self._ended or _CLIENT_CLOSE_REASON
            try:
                await self._write(data)
            except TransportClosed:
                return
        # Read until the server's close frame (or the end of the stream); what else comes
        # meanwhile is dropped, nobody will receive it any more.
        while self._ws.state is ConnectionState.LOCAL_CLOSING and not self._torn:
            try:
                await self._receive_some()
            except TransportClosed:
                return
            self._messages.clear()

    async def _write(self, data: bytes) -> None:
        # An uncontended lock is taken without the scheduling round of ``async with``:
        # ``send_all`` is a checkpoint anyway, one round per frame is enough.
        try:
            self._send_lock.acquire_nowait()
        except trio.WouldBlock:
            await self._send_lock.acquire()
        try:
            if self._torn:
                raise TransportClosed(self._ended or "WebSocket connection lost")
            self._torn = True  # until send_all returned: a cancellation leaves it torn
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self._lost()
                raise TransportClosed(self._ended or "WebSocket connection lost") from None
            self._torn = False
        finally:
            self._send_lock.release()

    async def _read_bytes(self) -> bytes | None:
        """The next bytes of the stream, None at its end (or when it failed)."""
        try:
            data = await self._stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return None
        if not data:
            return None
        return data if isinstance(data, bytes) else bytes(data)

    async def _receive_some(self) -> None:
        data = await self._read_bytes()
        if self._ws.state is ConnectionState.CLOSED:
            self._lost()  # nothing more is read after the close handshake
            return
        self._ws.receive_data(data)
        await self._handle_events()

    def _lost(self) -> None:
        self._ended = self._ended or _close_reason(_ABNORMAL_CLOSURE, None)

    async def _handle_events(self) -> None:
        for event in self._ws.events():
            await self._handle(event)

    async def _handle(self, event: Event) -> None:
        if isinstance(event, TextMessage | BytesMessage):
            await self._take_part(event)
        elif isinstance(event, Ping):
            if self._ws.state is ConnectionState.OPEN:
                await self._write(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            await self._closed_by_peer(event)

    async def _take_part(self, event: TextMessage | BytesMessage) -> None:
        if self._ended is not None:
            return
        data: Frame = event.data if isinstance(event.data, str | bytes) else bytes(event.data)
        self._part_size += len(data)
        if self._part_size > self._max_message_size:
            self._parts = []
            self._part_size = 0
            self._ended = f"Exceeded maximum message size: {self._max_message_size} bytes"
            if self._ws.state is ConnectionState.OPEN:
                close = CloseConnection(_MESSAGE_TOO_BIG, self._ended)
                try:
                    await self._write(self._ws.send(close))
                except TransportClosed:
                    pass
            return
        if not event.message_finished:
            self._parts.append(data)
            return
        if self._parts:
            self._parts.append(data)
            data = _joined(self._parts)
            self._parts = []
        self._part_size = 0
        self._messages.append(data)

    async def _closed_by_peer(self, event: CloseConnection) -> None:
        self._ended = self._ended or _close_reason(event.code, event.reason)
        if self._torn:
            return
        state = self._ws.state
        try:
            if state is ConnectionState.REMOTE_CLOSING:
                await self._write(self._ws.send(event.response()))
            elif state is ConnectionState.OPEN:
                # wsproto reports a frame it could not parse as a close event: we close.
                await self._write(self._ws.send(CloseConnection(event.code, event.reason)))
        except (TransportClosed, LocalProtocolError):
            pass


def _joined(parts: list[Frame]) -> Frame:
    if isinstance(parts[0], str):
        return "".join(part for part in parts if isinstance(part, str))
    return b"".join(part for part in parts if isinstance(part, bytes))


def _split_url(url: str) -> tuple[str, int, str, bool]:
    """``(host, port, target, secure)`` of a ``ws://`` or ``wss://`` URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"a WebSocket URL must start with ws:// or wss://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"the WebSocket URL {url!r} has no host")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.hostname, port, target, secure


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

    ``connect_timeout`` bounds the TCP connection, TLS and the opening handshake together;
    ``disconnect_timeout`` bounds the wait for the server's close reply when the block ends.

    Raises:
        ValueError: ``url`` is not a WebSocket URL.
        TransportClosed: The connection could not be opened (refused, timed out, rejected
            by the server, TLS failure).
    """
    host, port, target, secure = _split_url(url)
    if secure and ssl_context is None:
        ssl_context = ssl.create_default_context()
    host_header = host if port in (80, 443) else f"{host}:{port}"
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(connect_timeout):
            if secure:
                assert ssl_context is not None
                stream = await trio.open_ssl_over_tcp_stream(
                    host, port, ssl_context=ssl_context, https_compatible=True
                )
            else:
                stream = await trio.open_tcp_stream(host, port)
            transport = await WebSocketTransport.handshake(
                stream,
                host=host_header,
                target=target,
                max_message_size=max_message_size,
                close_timeout=disconnect_timeout,
            )
    except BaseException as exc:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        if isinstance(exc, trio.TooSlowError):
            raise TransportClosed(
                f"WebSocket handshake failed: no connection within {connect_timeout} s"
            ) from None
        if isinstance(exc, OSError | trio.BrokenResourceError):
            raise TransportClosed(f"WebSocket connection failed: {exc}") from exc
        raise
    try:
        yield transport
    finally:
        await transport.aclose()
