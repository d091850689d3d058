"""An in-process transport for tests: two connected ends over bounded memory channels.

``memory_transport_pair()`` gives two :class:`MemoryTransport` ends; what one sends the other
receives, in order.  Closing either end closes the connection for both: the other end's
``receive()`` raises :class:`~kora.sync.errors.TransportClosed` once it has read what was
already buffered, and both ends' ``send()`` raise it at once.

:class:`MemoryNetwork` is a :data:`~kora.sync.transport.TransportFactory` for the engine: every
connection attempt makes a new pair, keeps one end and hands the other to whoever serves
``accept()`` (a fake server in a test).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, final

import trio

from kora.sync.errors import TransportClosed
from kora.sync.transport import Frame, Transport

__all__ = ["DEFAULT_MEMORY_CAPACITY", "MemoryNetwork", "MemoryTransport", "memory_transport_pair"]

#: Frames buffered per direction before ``send`` waits (backpressure, like a socket).
DEFAULT_MEMORY_CAPACITY: Final = 64


@final
class _Link:
    """What both ends of one pair share: whether the connection is closed, and why."""

    __slots__ = ("closed", "reason")

    def __init__(self) -> None:
        self.closed = False
        self.reason = ""


@final
class MemoryTransport:
    """One end of an in-memory connection (make them with :func:`memory_transport_pair`)."""

    __slots__ = ("_incoming", "_link", "_outgoing", "frames_sent")

    def __init__(
        self,
        outgoing: trio.MemorySendChannel[Frame],
        incoming: trio.MemoryReceiveChannel[Frame],
        link: _Link,
    ) -> None:
        self._outgoing = outgoing
        self._incoming = incoming
        self._link = link
        self.frames_sent = 0

    @property
    def closed(self) -> bool:
        """True once either end closed the connection."""
        return self._link.closed

    @property
    def buffered(self) -> int:
        """Frames the other end sent that this end has not received yet."""
        return self._incoming.statistics().current_buffer_used

    async def send(self, frame: Frame) -> None:
        """Send one frame to the other end (waits while its buffer is full)."""
        if self._link.closed:
            await trio.lowlevel.checkpoint()
            raise TransportClosed(self._link.reason)
        try:
            await self._outgoing.send(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise TransportClosed(self._link.reason or "memory transport closed") from None
        self.frames_sent += 1

    async def receive(self) -> Frame:
        """The next frame from the other end."""
        try:
            return await self._incoming.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise TransportClosed(self._link.reason or "memory transport closed") from None

    def close(self, reason: str = "memory transport closed") -> None:
        """Close the connection for both ends (synchronous; idempotent)."""
        if not self._link.closed:
            self._link.closed = True
            self._link.reason = reason
        self._outgoing.close()
        self._incoming.close()

    async def aclose(self) -> None:
        """Close the connection for both ends (idempotent)."""
        self.close()
        await trio.lowlevel.checkpoint()


def memory_transport_pair(
    capacity: int = DEFAULT_MEMORY_CAPACITY,
) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected ends; each direction buffers ``capacity`` frames.

    Raises:
        ValueError: ``capacity`` is not a finite integer >= 0.
    """
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
        raise ValueError(f"capacity is an integer >= 0, not {capacity!r}")
    a_to_b_send, a_to_b_receive = trio.open_memory_channel[Frame](capacity)
    b_to_a_send, b_to_a_receive = trio.open_memory_channel[Frame](capacity)
    link = _Link()
    left = MemoryTransport(a_to_b_send, b_to_a_receive, link)
    right = MemoryTransport(b_to_a_send, a_to_b_receive, link)
    return left, right


@final
class MemoryNetwork:
    """A transport factory whose connections end at ``accept()`` (a test's fake server).

    Example::

        network = MemoryNetwork()
        options = SyncOptions(url="memory://", transport=network)
        ...
        server_end = await network.accept()   # the peer of the engine's next connection

    Args:
        capacity: Frames buffered per direction on each connection.
        backlog: Connections that may wait for ``accept()``; ``math.inf`` is refused.
    """

    def __init__(self, capacity: int = DEFAULT_MEMORY_CAPACITY, backlog: int = 8) -> None:
        if backlog == math.inf:
            raise ValueError("backlog must be finite")
        self._capacity = capacity
        self._pending_send, self._pending_receive = trio.open_memory_channel[MemoryTransport](
            backlog
        )
        self.refuse_reason: str | None = None
        self.connections = 0
        self.open_connections: list[MemoryTransport] = []

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[Transport]:
        if self.refuse_reason is not None:
            await trio.lowlevel.checkpoint()
            raise TransportClosed(self.refuse_reason)
        ours, theirs = memory_transport_pair(self._capacity)
        self.connections += 1
        self.open_connections.append(ours)
        try:
            try:
                self._pending_send.send_nowait(theirs)
            except trio.WouldBlock:
                raise TransportClosed("memory network: backlog full") from None
            yield ours
        finally:
            ours.close("client closed the connection")
            self.open_connections.remove(ours)

    async def accept(self) -> MemoryTransport:
        """The server end of the next connection the engine opens."""
        return await self._pending_receive.receive()
