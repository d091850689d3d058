"""``ConnectionActor``: the transport of one connection, frames in and frames out.

It opens the transport (``started()`` once it is connected), then pumps frames from the
outgoing mailbox to the transport and from the transport to the incoming mailbox, counting
bytes for diagnostics.  Nothing else: it never decodes a frame.

When the transport closes, it raises :class:`~kora.sync.errors.ConnectionEnded` with the
reason, which ends the whole connection scope.  When it is stopped (the scope is cancelled)
it closes the transport inside its shutdown grace, so a WebSocket gets its close handshake.
"""

from __future__ import annotations

import logging
from typing import Final

import trio

from actors import shutdown_grace
from kora.sync._messages import post
from kora.sync.diagnostics import FrameReceived, FrameSent, MetricMessage
from kora.sync.errors import ConnectionEnded, TransportClosed
from kora.sync.transport import Frame, Transport, TransportFactory, frame_size

__all__ = ["CLOSE_TIMEOUT", "ConnectionActor"]

log: Final = logging.getLogger("kora.sync")

#: Seconds a transport's close may take when the connection is stopped.
CLOSE_TIMEOUT: Final = 2.0


class ConnectionActor:
    """Owns one transport for the life of one connection.

    Args:
        factory: Opens the transport (``async with factory() as transport``).
        frames_out: Frames to send (from the handshake, receiver and outbound actors).
        frames_in: Where received frames go (to the handshake, then the receiver actor).
        metrics: The diagnostics mailbox.
    """

    def __init__(
        self,
        *,
        factory: TransportFactory,
        frames_out: trio.MemoryReceiveChannel[Frame],
        frames_in: trio.MemorySendChannel[Frame],
        metrics: trio.MemorySendChannel[MetricMessage],
    ) -> None:
        self._factory = factory
        self._frames_out = frames_out
        self._frames_in = frames_in
        self._metrics = metrics
        self._ended: str | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        with self._frames_out, self._frames_in, self._metrics:
            try:
                async with self._factory() as transport:
                    started = True
                    task_status.started()
                    try:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._pump_out, transport, nursery.cancel_scope)
                            nursery.start_soon(self._pump_in, transport, nursery.cancel_scope)
                    finally:
                        # A graceful close (WebSocket close handshake) even when stopped.
                        with shutdown_grace(), trio.move_on_after(CLOSE_TIMEOUT):
                            await transport.aclose()
            except (TransportClosed, OSError) as exc:
                reason = exc.reason if isinstance(exc, TransportClosed) else str(exc)
                if not started:
                    raise ConnectionEnded(f"could not connect: {reason}") from exc
                self._ended = self._ended or reason
            raise ConnectionEnded(self._ended or "connection closed")

    async def _pump_out(self, transport: Transport, scope: trio.CancelScope) -> None:
        try:
            async for frame in self._frames_out:
                await transport.send(frame)
                await post(self._metrics, FrameSent(frame_size(frame)))
        except TransportClosed as exc:
            self._end(exc.reason, scope)

    async def _pump_in(self, transport: Transport, scope: trio.CancelScope) -> None:
        try:
            while True:
                frame = await transport.receive()  # a checkpoint per frame
                await post(self._metrics, FrameReceived(frame_size(frame)))
                await post(self._frames_in, frame)
        except TransportClosed as exc:
            self._end(exc.reason, scope)

    def _end(self, reason: str, scope: trio.CancelScope) -> None:
        if self._ended is None:
            self._ended = reason
            log.info("sync connection closed: %s", reason)
        scope.cancel()
