"""The one small interface every transport implements, and how the engine opens one.

A :class:`Transport` moves whole frames (``str``: a JSON text frame, ``bytes``: a binary
frame) and knows nothing about the protocol.  ``receive()`` raises
:class:`~kora.sync.errors.TransportClosed` once the connection is gone, whoever closed it.

A connection attempt opens a transport through a :data:`TransportFactory`: a callable that
returns an async context manager yielding a connected transport and closing it on exit.  A
factory rather than a transport object, because every reconnection needs a fresh one.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeAlias, runtime_checkable

__all__ = ["Frame", "Transport", "TransportFactory", "frame_size"]

#: One message on the wire: ``str`` for a text frame, ``bytes`` for a binary frame.
Frame: TypeAlias = str | bytes


@runtime_checkable
class Transport(Protocol):
    """A connected, message-oriented, bidirectional channel to a sync server."""

    async def send(self, frame: Frame) -> None:
        """Send one frame.

        Raises:
            TransportClosed: The connection is gone.
        """

    async def receive(self) -> Frame:
        """Wait for and return the next frame.

        Raises:
            TransportClosed: The connection is gone (no more frames will come).
        """

    async def aclose(self) -> None:
        """Close the connection (idempotent); always closes, even when cancelled."""


#: Opens one connection: ``async with factory() as transport``.
TransportFactory: TypeAlias = Callable[[], AbstractAsyncContextManager[Transport]]


def frame_size(frame: Frame) -> int:
    """Bytes a frame occupies on the wire (UTF-8 for text frames)."""
    return len(frame.encode()) if isinstance(frame, str) else len(frame)
