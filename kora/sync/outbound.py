"""``OutboundQueueActor``: the live view of the durable outbound queue.

It lives as long as sync is enabled, across connections.  The queue itself is the store's
(``pending``/``acknowledge``/``reject``): an operation leaves it only when the server has
acknowledged the batch that carried it, so a crash or a dropped connection at any moment
loses nothing (the next connection simply sends it again; the server drops duplicates by
id).

Per connection (from :class:`~kora.sync._messages.Attached` to
:class:`~kora.sync._messages.Detached`):

1. **Delta.**  What the server lacks: for every node whose sequence in our version vector
   is above the server's, our stored operations in that range, plus every queued
   operation, without duplicates, in causal order, cut into batches of ``batch_size``
   (``batchIndex``, ``totalBatches``, ``isFinal`` on the last; one empty final batch when
   there is nothing), as the reference client does (spec 4.2).
2. **Streaming.**  Then queued operations not yet sent on this connection, ``batch_size`` at
   a time, as ``{isFinal: true, batchIndex: 0}`` batches.
3. **Window.**  Up to ``window`` batches await acknowledgment at once; acknowledgments come
   in order (the session checks), each dequeues its batch durably and lets the next go.
4. **Scope.**  Under a scope the server granted, operations outside it are not sent, in the
   delta or later (``kora.sync.scope``): a queued one is rejected locally with
   ``OUT_OF_SCOPE`` (``sync:operation-rejected``, ``local: True``), so it leaves the queue
   but stays visible in the store's rejected list; another node's operation that the delta
   would relay is just left out.

Local writes wake it through a store change listener that sets a flag and posts a
:class:`~kora.sync._messages.QueueChanged` with ``send_nowait``; when the mailbox is full the
post is dropped, which is safe because the flag is read after every message.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Final

import attrs
import trio

from kora.core.causal import causal_order
from kora.core.operation import Operation
from kora.core.version_vector import VersionVector
from kora.protocol.actions import SendFrame
from kora.protocol.client import ClientState
from kora.protocol.messages import ScopeMap
from kora.store import Store
from kora.sync._messages import (
    Attached,
    BatchAcked,
    Detached,
    EventEmitter,
    Link,
    OutboundMessage,
    QueueChanged,
    Streaming,
)
from kora.sync.diagnostics import BatchRoundTrip, MetricMessage, OperationsSent
from kora.sync.scope import OUT_OF_SCOPE, needs_record, operation_in_scope
from kora.sync.status import StatusBoard
from kora.sync.transport import Frame, frame_size

__all__ = ["ChangeFlag", "OutboundQueueActor", "plan_delta_batches"]

log: Final = logging.getLogger("kora.sync")


class ChangeFlag:
    """Set by the store's change listener, taken by the actor (a coalescing wake-up)."""

    def __init__(self) -> None:
        self.is_set = True  # the queue must be read once at start

    def set(self) -> None:
        self.is_set = True

    def take(self) -> bool:
        was, self.is_set = self.is_set, False
        return was


@attrs.frozen
class _PlannedBatch:
    operations: tuple[Operation, ...]
    batch_index: int
    total_batches: int
    is_final: bool


@attrs.frozen
class _SentBatch:
    op_ids: tuple[str, ...]
    sent_at: float
    size: int


def plan_delta_batches(operations: Sequence[Operation], batch_size: int) -> list[_PlannedBatch]:
    """Cut the handshake delta into batches (one empty final batch when there is nothing)."""
    if not operations:
        return [_PlannedBatch((), 0, 1, True)]
    chunks = [
        tuple(operations[start : start + batch_size])
        for start in range(0, len(operations), batch_size)
    ]
    return [
        _PlannedBatch(chunk, index, len(chunks), index == len(chunks) - 1)
        for index, chunk in enumerate(chunks)
    ]


class _Connection:
    """What the actor knows about the current connection."""

    def __init__(
        self, link: Link, frames: trio.MemorySendChannel[Frame], scope: ScopeMap | None
    ) -> None:
        self.link = link
        self.frames = frames
        self.scope = scope
        self.planned: deque[_PlannedBatch] = deque()
        self.in_flight: dict[str, _SentBatch] = {}
        self.sent_ids: set[str] = set()


class OutboundQueueActor:
    """Sends the queue over whichever connection is up (see the module docstring).

    Args:
        store: The local store (owner of the durable queue).
        batch_size: Operations per batch.
        inbox: This actor's mailbox.
        metrics: The diagnostics mailbox.
        board: The status board (pending count, last synced time).
        emit: Publishes app events.
        changed: The flag the store change listener sets.
    """

    def __init__(
        self,
        *,
        store: Store,
        batch_size: int,
        inbox: trio.MemoryReceiveChannel[OutboundMessage],
        metrics: trio.MemorySendChannel[MetricMessage],
        board: StatusBoard,
        emit: EventEmitter,
        changed: ChangeFlag,
    ) -> None:
        self._store = store
        self._batch_size = batch_size
        self._inbox = inbox
        self._metrics = metrics
        self._board = board
        self._emit = emit
        self._changed = changed
        self._connection: _Connection | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._inbox, self._metrics:
            try:
                await self._refresh_pending()
                task_status.started()
                async for message in self._inbox:
                    await self._handle(message)
                    if self._changed.take():
                        await self._refresh_pending()
                        await self._flush()
            finally:
                if self._connection is not None:
                    self._connection.frames.close()

    async def _handle(self, message: OutboundMessage) -> None:
        if isinstance(message, Attached):
            try:
                await self._attach(message.link, message.server_vector, message.scope)
            finally:
                message.delta_sent.set()
        elif isinstance(message, Detached):
            self._detach(message.link_id)
        elif isinstance(message, BatchAcked):
            await self._acknowledged(message)
        elif isinstance(message, Streaming):
            if self._current(message.link_id) is not None:
                await self._refresh_pending()
                self._board.streaming(time.time())
                self._emit("sync:synced", {})
        elif isinstance(message, QueueChanged):
            self._changed.set()

    def _current(self, link_id: int) -> _Connection | None:
        connection = self._connection
        return connection if connection is not None and connection.link.id == link_id else None

    # ---------------------------------------------------------------- connection life

    async def _attach(
        self, link: Link, server_vector: VersionVector, scope: ScopeMap | None
    ) -> None:
        if self._connection is not None:
            self._detach(self._connection.link.id)
        connection = _Connection(link, link.frames_out.sender(), scope)
        self._connection = connection
        delta = await self._delta(server_vector)
        if scope is not None:
            delta = await self._within_scope(delta, scope)
        connection.planned.extend(plan_delta_batches(delta, self._batch_size))
        await self._flush()

    def _detach(self, link_id: int) -> None:
        connection = self._current(link_id)
        if connection is None:
            return
        connection.frames.close()
        self._connection = None

    async def _delta(self, server_vector: VersionVector) -> list[Operation]:
        local = await self._store.version_vector()
        by_id: dict[str, Operation] = {}
        for node_id, sequence in local.items():
            known = server_vector.get(node_id)
            if sequence > known:
                for op in await self._store.operations_in_range(node_id, known + 1, sequence):
                    by_id[op.id] = op
        for op in await self._store.pending():
            by_id.setdefault(op.id, op)
        return causal_order(by_id.values())

    async def _within_scope(
        self, operations: Sequence[Operation], scope: ScopeMap
    ) -> list[Operation]:
        """The operations in ``scope``; queued ones outside it are rejected locally."""
        kept: list[Operation] = []
        outside: list[Operation] = []
        for op in operations:
            record = None
            if needs_record(op, scope):
                record = await self._store.get(op.collection, op.record_id, include_deleted=True)
            if operation_in_scope(op, scope, None if record is None else record.fields):
                kept.append(op)
            else:
                outside.append(op)
        if outside:
            queued = {op.id for op in await self._store.pending()}
            for op in outside:
                if op.id in queued:
                    await self._reject_out_of_scope(op)
                else:
                    log.debug("left operation %s of another node out: outside the scope", op.id)
            await self._refresh_pending()
        return kept

    async def _reject_out_of_scope(self, op: Operation) -> None:
        message = (
            f'Operation "{op.id}" in collection "{op.collection}" is outside the sync scope '
            "the server granted; it was not sent"
        )
        stored = await self._store.reject(
            op.id, code=OUT_OF_SCOPE, message=message, retriable=False
        )
        log.info("rejected local operation %s: outside the sync scope", op.id)
        self._emit(
            "sync:operation-rejected",
            {
                "operation_id": op.id,
                "collection": op.collection,
                "record_id": op.record_id,
                "code": OUT_OF_SCOPE,
                "message": message,
                "retriable": False,
                "rejection": stored,
                "local": True,
            },
        )

    # ---------------------------------------------------------------- sending

    async def _flush(self) -> None:
        connection = self._connection
        while connection is not None and connection is self._connection:
            session = connection.link.session
            if session.state is ClientState.CLOSED or not session.can_send_batch:
                return
            if connection.planned:
                planned = connection.planned.popleft()
                await self._send(
                    connection,
                    planned.operations,
                    is_final=planned.is_final,
                    batch_index=planned.batch_index,
                    total_batches=planned.total_batches,
                )
                continue
            limit = len(connection.sent_ids) + self._batch_size
            fresh = [
                op
                for op in await self._store.pending(limit=limit)
                if op.id not in connection.sent_ids
            ][: self._batch_size]
            if not fresh:
                return
            if connection.scope is not None:
                fresh = await self._within_scope(fresh, connection.scope)
                if not fresh:
                    continue  # all of them were rejected: look at the queue again
            await self._send(connection, fresh)

    async def _send(
        self,
        connection: _Connection,
        operations: Sequence[Operation],
        *,
        is_final: bool = True,
        batch_index: int = 0,
        total_batches: int | None = None,
    ) -> None:
        session = connection.link.session
        (action,) = session.send_batch(
            operations,
            is_final=is_final,
            batch_index=batch_index,
            total_batches=total_batches,
        )
        assert isinstance(action, SendFrame)
        op_ids = tuple(op.id for op in operations)
        connection.in_flight[action.message.message_id] = _SentBatch(
            op_ids, trio.current_time(), frame_size(action.frame)
        )
        connection.sent_ids.update(op_ids)
        try:
            await connection.frames.send(action.frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The connection ended under us; Detached follows and the ops stay queued.
            self._detach(connection.link.id)
            return
        self._board.exchange_started()
        if operations:
            await self._metrics.send(OperationsSent(len(operations)))
            self._emit(
                "sync:sent",
                {"operations": tuple(operations), "batch_id": action.message.message_id},
            )

    async def _acknowledged(self, message: BatchAcked) -> None:
        connection = self._current(message.link_id)
        if connection is None:
            return
        sent = connection.in_flight.pop(message.message_id, None)
        if sent is None:
            log.warning("acknowledgment of unknown batch %s", message.message_id)
            return
        if sent.op_ids:
            await self._store.acknowledge(sent.op_ids)
        connection.sent_ids.difference_update(sent.op_ids)
        await self._metrics.send(BatchRoundTrip(message.received_at - sent.sent_at, sent.size))
        self._board.acknowledged(time.time())
        self._emit(
            "sync:acknowledged", {"batch_id": message.message_id, "operations": len(sent.op_ids)}
        )
        await self._refresh_pending()
        await self._flush()

    async def _refresh_pending(self) -> None:
        self._board.pending(await self._store.pending_count())
