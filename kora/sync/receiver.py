"""``ReceiverActor``: everything the server sends after the handshake-response.

For each frame it asks the connection's protocol session what to do and does it:

* delivery and legacy batches are applied to the store (one transaction per batch), then
  acknowledged by the session's watermark rules (spec 4.4): a batch that fails to apply is
  not acknowledged and the watermark does not move;
* watermark moves are persisted under the current view;
* acknowledgments of our batches go to the outbound queue actor, which dequeues durably;
* ``operation-rejected`` moves the operation to the store's rejected list (an event says so);
* ``error``: ``AUTH_FAILED`` stops automatic retries, ``INVALID_TIMESTAMP`` is fatal, any
  other code ends the connection so that it is reopened (the batch in flight is resent).

It also watches acknowledgments: when the oldest batch in flight has waited ``ack_timeout``
seconds, the connection is presumed dead and ended (spec 5.4).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Final

import trio

from kora.protocol.actions import (
    Action,
    ApplyBatch,
    BatchAcknowledged,
    BatchIgnored,
    ErrorReceived,
    OperationRejectedReceived,
    ReachedStreaming,
    SendFrame,
    WatermarkChanged,
)
from kora.protocol.errors import RemoteProtocolError
from kora.store import Store
from kora.store.errors import StoreFailedError
from kora.sync._messages import (
    BatchAcked,
    EventEmitter,
    Link,
    OutboundMessage,
    QueueChanged,
    Streaming,
)
from kora.sync.diagnostics import MetricMessage, OperationsReceived
from kora.sync.errors import ConnectionEnded
from kora.sync.status import StatusBoard
from kora.sync.transport import Frame

__all__ = ["ReceiverActor"]

log: Final = logging.getLogger("kora.sync")


class ReceiverActor:
    """Handles one connection's inbound frames (see the module docstring).

    Args:
        link: The connection's session and outgoing frames.
        store: The local store.
        view: The view signature the delivery watermark is stored under.
        ack_timeout: Seconds the oldest batch in flight may wait for its acknowledgment.
        frames_in: Received frames.
        frames_out: Frames to send (our acknowledgments).
        outbound: The outbound queue actor's mailbox.
        metrics: The diagnostics mailbox.
        board: The status board.
        emit: Publishes app events.
    """

    def __init__(
        self,
        *,
        link: Link,
        store: Store,
        view: str,
        ack_timeout: float,
        frames_in: trio.MemoryReceiveChannel[Frame],
        frames_out: trio.MemorySendChannel[Frame],
        outbound: trio.MemorySendChannel[OutboundMessage],
        metrics: trio.MemorySendChannel[MetricMessage],
        board: StatusBoard,
        emit: EventEmitter,
    ) -> None:
        self._link = link
        self._store = store
        self._view = view
        self._ack_timeout = ack_timeout
        self._frames_in = frames_in
        self._frames_out = frames_out
        self._outbound = outbound
        self._metrics = metrics
        self._board = board
        self._emit = emit
        self._watched: str | None = None
        self._watched_since = 0.0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        session = self._link.session
        with self._frames_in, self._frames_out, self._outbound, self._metrics:
            task_status.started()
            while True:
                frame = await self._next_frame()
                try:
                    actions = session.receive_frame(frame)
                except RemoteProtocolError as exc:
                    if exc.fatal:
                        raise ConnectionEnded(f"protocol error: {exc}") from exc
                    log.warning("ignored a frame from the server: %s", exc)
                    continue
                await self._act(actions)

    async def _next_frame(self) -> Frame:
        while True:
            with trio.move_on_at(self._ack_deadline()):
                try:
                    return await self._frames_in.receive()
                except trio.EndOfChannel:
                    raise ConnectionEnded("connection closed") from None
            self._check_ack_timeout()

    def _ack_deadline(self) -> float:
        in_flight = self._link.session.in_flight
        now = trio.current_time()
        if not in_flight:
            self._watched = None
            # Nothing to watch: look again later, since a batch may go out meanwhile.
            return now + self._ack_timeout / 4
        oldest = in_flight[0].message_id
        if oldest != self._watched:
            self._watched = oldest
            self._watched_since = now
        return self._watched_since + self._ack_timeout

    def _check_ack_timeout(self) -> None:
        in_flight = self._link.session.in_flight
        if not in_flight or in_flight[0].message_id != self._watched:
            return
        if trio.current_time() - self._watched_since >= self._ack_timeout:
            raise ConnectionEnded(
                f"Timed out waiting for acknowledgment of outbound batch {self._watched}"
            )

    async def _act(self, initial: list[Action]) -> None:
        actions = deque(initial)
        while actions:
            action = actions.popleft()
            if isinstance(action, SendFrame):
                await self._frames_out.send(action.frame)
            elif isinstance(action, ApplyBatch):
                actions.extend(await self._apply(action))
            elif isinstance(action, WatermarkChanged):
                await self._store.set_delivery_watermark(self._view, action.watermark)
            elif isinstance(action, BatchAcknowledged):
                await self._outbound.send(
                    BatchAcked(self._link.id, action.batch.message_id, trio.current_time())
                )
            elif isinstance(action, ReachedStreaming):
                await self._outbound.send(Streaming(self._link.id))
            elif isinstance(action, OperationRejectedReceived):
                await self._rejected(action)
            elif isinstance(action, ErrorReceived):
                self._error(action)
            elif isinstance(action, BatchIgnored):
                log.debug("ignored batch %s: %s", action.batch.message_id, action.reason)
            # Side channels (awareness, yjs, blobs) are accepted and ignored (spec 1.4);
            # handshake actions cannot occur after the response.

    async def _apply(self, action: ApplyBatch) -> list[Action]:
        batch = action.batch
        session = self._link.session
        self._board.exchange_started()
        try:
            result = await self._store.apply_remote(batch.operations)
        except StoreFailedError as exc:
            log.error("could not apply batch %s: %s", batch.message_id, exc)
            return session.batch_apply_failed(batch.message_id)
        if batch.operations:
            await self._metrics.send(OperationsReceived(len(batch.operations)))
        if result.applied:
            self._emit(
                "sync:received",
                {"operations": result.applied, "duplicates": result.duplicates},
            )
        for rejection in result.rejected:
            self._emit(
                "sync:apply-failed",
                {
                    "operation": rejection.operation,
                    "code": rejection.code,
                    "message": rejection.message,
                },
            )
        return session.batch_applied(batch.message_id)

    async def _rejected(self, action: OperationRejectedReceived) -> None:
        message = action.message
        stored = await self._store.reject(
            message.operation_id,
            code=message.code,
            message=message.message,
            retriable=message.retriable,
        )
        self._emit(
            "sync:operation-rejected",
            {
                "operation_id": message.operation_id,
                "collection": message.collection,
                "record_id": message.record_id,
                "code": message.code,
                "message": message.message,
                "retriable": message.retriable,
                "rejection": stored,
                "local": False,
            },
        )
        await self._outbound.send(QueueChanged())

    def _error(self, action: ErrorReceived) -> None:
        message = action.message
        if message.code == "AUTH_FAILED":
            raise ConnectionEnded(message.message, retry=False, auth_failed=True)
        if message.code == "INVALID_TIMESTAMP":
            self._emit("sync:clock-skew", {"source": "server-reject", "message": message.message})
            raise ConnectionEnded(f"{message.code}: {message.message}", retry=False, fatal=True)
        raise ConnectionEnded(f"{message.code}: {message.message}")
