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
   in order (the session checks), each lets the next batch go at once, and its operations
   are dequeued by a separate task, which takes every acknowledgment that came in meanwhile
   in one transaction (so a burst costs a few commits, not one per batch), not synced to
   the disk and run by the store at the start of its next call (``Store.acknowledge_soon``:
   a sequential writer's next write; ``DEQUEUE_FLUSH_DELAY`` at the latest).  An operation
   acknowledged but not yet dequeued when the process dies is simply sent again (the
   server drops duplicates by id); ``pending_operations`` counts it until it is gone.
4. **Scope.**  Under a scope the server granted, operations outside it are not sent, in the
   delta or later (``kora.sync.scope``): a queued one is rejected locally with
   ``OUT_OF_SCOPE`` (``sync:operation-rejected``, ``local: True``), so it leaves the queue
   but stays visible in the store's rejected list; another node's operation that the delta
   would relay is just left out.
5. **Retry later.**  An operation the server refused for now (``operation-rejected`` with
   ``retriable: true``, :class:`~kora.sync._messages.RetryLater`: a validator that threw, or
   a ``RATE_LIMIT``) stays in the durable queue: the acknowledgment of its batch dequeues
   the others, not it.  It is held back, then sent again on this connection after a delay
   from the reconnection table (``RETRY_BACKOFF``: 1, 2, 4 ... 30 s as the operation is
   refused again and again), or sooner with the next connection's delta, whose own attempts
   are already spaced by the reconnection backoff.  The Kora.js client instead drops it
   from the queue for good (spec 8.5); we must not lose a write to a passing failure.

The actor keeps the queue in memory: it reads the store's queue when it starts and on every
new connection (a clock rebase at the handshake may have re-stamped it), and learns of local
writes from the store's queue listener (``Store.add_queue_listener``), so neither a local
write nor an acknowledgment costs a read.  Local writes also wake it through the engine's
queue listener, which sets a flag and posts a :class:`~kora.sync._messages.QueueChanged` with
``send_nowait``; when the mailbox is full the post is dropped, which is safe because the flag
is read after every message.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
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
    RetryLater,
    Streaming,
    post,
)
from kora.sync.backoff import ReconnectBackoff
from kora.sync.diagnostics import BatchRoundTrip, MetricMessage, OperationsSent
from kora.sync.scope import OUT_OF_SCOPE, needs_record, operation_in_scope
from kora.sync.status import StatusBoard
from kora.sync.transport import Frame, frame_size

__all__ = [
    "DEQUEUE_FLUSH_DELAY",
    "RETRY_BACKOFF",
    "ChangeFlag",
    "OutboundQueueActor",
    "plan_delta_batches",
]

log: Final = logging.getLogger("kora.sync")

#: Seconds an acknowledged operation's dequeue may wait for the store's next call before it
#: runs on its own (``Store.acknowledge_soon``).
DEQUEUE_FLUSH_DELAY: Final = 0.05

#: The delays before an operation refused for now is sent again: ``table_delay(n + 1)``
#: after its ``n``-th refusal in a row, i.e. the reconnection defaults (1, 2, 4 ... 30 s),
#: so a failing validator is asked at most as often as a failing server is dialled.
RETRY_BACKOFF: Final = ReconnectBackoff()


class ChangeFlag:
    """Set by the engine's queue listener, taken by the actor (a coalescing wake-up)."""

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
        changed: The flag the engine's queue listener sets.
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
        #: The store's queue minus what is being dequeued, by id, in queue order.
        self._queue: dict[str, Operation] = {}
        #: Acknowledged operations whose durable dequeue has not committed yet.
        self._dequeuing: set[str] = set()
        #: Acknowledged batches not yet handed to the dequeuing task: (batch id, op ids).
        self._acked: list[tuple[str, tuple[str, ...]]] = []
        self._acked_arrived = trio.Event()
        #: Queued operations refused for now and not sent again yet: id -> trio time from
        #: which they may be.  Their batch's acknowledgment leaves them queued.
        self._held: dict[str, float] = {}
        #: How many times in a row the server refused each operation for now.
        self._refusals: dict[str, int] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._inbox, self._metrics:
            stop_listening = self._store.add_queue_listener(self._queued)
            try:
                await self._reload()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._dequeue)
                    task_status.started()
                    while True:
                        try:
                            message = await self._next_message()
                        except trio.EndOfChannel:
                            break
                        if message is None:
                            await self._release_held()
                        else:
                            await self._handle(message)
                        if self._changed.take():
                            self._refresh_pending()
                            await self._flush()
                    nursery.cancel_scope.cancel()
            finally:
                stop_listening()
                if self._connection is not None:
                    self._connection.frames.close()

    async def _next_message(self) -> OutboundMessage | None:
        """The next message, or None when a held operation's release time came first."""
        release_at = self._next_release()
        if release_at == math.inf:
            # Mostly nothing is held: no cancel scope per message.
            return await self._inbox.receive()
        with trio.move_on_at(release_at):
            return await self._inbox.receive()
        return None

    # ---------------------------------------------------------------- the queue in memory

    def _queued(self, operations: Sequence[Operation]) -> None:
        """The store's queue listener: a local write committed (runs in the writing task)."""
        queue = self._queue
        last = next(reversed(queue.values()), None)
        for op in operations:
            queue[op.id] = op
        if last is not None and operations[0].sequence_number < last.sequence_number:
            # Two writers' notifications crossed: queue order is sequence order.
            self._queue = dict(sorted(queue.items(), key=lambda item: item[1].sequence_number))
        self._changed.set()
        self._refresh_pending()

    async def _reload(self) -> None:
        """Read the queue from the store (at start, on a new connection, after rejections)."""
        queued = await self._store.pending()
        self._queue = {op.id: op for op in queued if op.id not in self._dequeuing}
        self._refresh_pending()

    def _forget(self, op_ids: Iterable[str]) -> None:
        ids = op_ids if isinstance(op_ids, tuple | list) else tuple(op_ids)
        drop = self._queue.pop
        for op_id in ids:
            drop(op_id, None)
        # Mostly nothing is held or refused: no lookups per operation then.
        for table in (self._held, self._refusals):
            if table:
                for op_id in ids:
                    table.pop(op_id, None)

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
                self._refresh_pending()
                self._board.streaming(time.time())
                self._emit("sync:synced", {})
        elif isinstance(message, QueueChanged):
            self._forget(message.removed)
            self._changed.set()
        elif isinstance(message, RetryLater):
            self._hold(message)

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
        # The delta carries every queued operation, held ones included: a new connection
        # is already spaced by the reconnection backoff.
        self._held.clear()
        await self._reload()  # the handshake may have re-stamped it (clock rebase)
        # A re-stamped operation has a new id: its count of refusals starts again.
        self._refusals = {
            op_id: count for op_id, count in self._refusals.items() if op_id in self._queue
        }
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
        for op in self._queue.values():
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
            for op in outside:
                if op.id in self._queue:
                    await self._reject_out_of_scope(op)
                    self._forget((op.id,))
                else:
                    log.debug("left operation %s of another node out: outside the scope", op.id)
            self._refresh_pending()
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
                "will_retry": False,
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
            sent_ids = connection.sent_ids
            held = self._held
            fresh = list(
                itertools.islice(
                    (
                        op
                        for op in self._queue.values()
                        if op.id not in sent_ids and op.id not in held
                    ),
                    self._batch_size,
                )
            )
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
            await post(connection.frames, action.frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The connection ended under us; Detached follows and the ops stay queued.
            self._detach(connection.link.id)
            return
        self._board.exchange_started()
        if operations:
            await post(self._metrics, OperationsSent(len(operations)))
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
        connection.sent_ids.difference_update(sent.op_ids)
        op_ids = sent.op_ids
        if self._held:
            # Refused for now while in flight (the refusal comes before the batch's
            # acknowledgment): it stays queued, to be sent again once released.
            op_ids = tuple(op_id for op_id in op_ids if op_id not in self._held)
        # Out of the view at once, so the next batch goes now; durably out in _dequeue.
        self._forget(op_ids)
        self._dequeuing.update(op_ids)
        self._acked.append((message.message_id, op_ids))
        self._acked_arrived.set()
        await post(self._metrics, BatchRoundTrip(message.received_at - sent.sent_at, sent.size))
        await self._flush()

    # ---------------------------------------------------------------- refused for now

    def _hold(self, message: RetryLater) -> None:
        connection = self._current(message.link_id)
        op_id = message.operation_id
        if connection is None or op_id not in connection.sent_ids or op_id not in self._queue:
            # A former connection (the new one's delta carries it again) or not a queued
            # operation of ours (another node's, relayed in the delta): nothing to hold.
            log.debug("operation %s refused for now: not held", op_id)
            return
        refusals = self._refusals.get(op_id, 0) + 1
        self._refusals[op_id] = refusals
        delay = RETRY_BACKOFF.table_delay(refusals + 1)
        self._held[op_id] = trio.current_time() + delay
        log.info(
            "operation %s refused for now (%d in a row): resent in %g s", op_id, refusals, delay
        )

    def _next_release(self) -> float:
        connection = self._connection
        if connection is None or not self._held:
            return math.inf
        # Only those whose batch was acknowledged: the others are still in flight.
        waiting = [at for op_id, at in self._held.items() if op_id not in connection.sent_ids]
        return min(waiting, default=math.inf)

    async def _release_held(self) -> None:
        connection = self._connection
        now = trio.current_time()
        for op_id, at in list(self._held.items()):
            if at <= now and (connection is None or op_id not in connection.sent_ids):
                del self._held[op_id]
        await self._flush()

    async def _dequeue(self) -> None:
        """Dequeue acknowledged operations: everything acknowledged since the last dequeue
        in one transaction.  Then count them as synced (``sync:acknowledged``)."""
        flush_at = math.inf
        while True:
            with trio.move_on_at(flush_at) as waiting:
                await self._acked_arrived.wait()
            if waiting.cancelled_caught:
                # Nothing used the store meanwhile: dequeue them on their own.
                flush_at = math.inf
                await self._store.flush_acknowledged()
                continue
            self._acked_arrived = trio.Event()
            batches, self._acked = self._acked, []
            op_ids = [op_id for _, ids in batches for op_id in ids]
            if op_ids:
                # Not synced to the disk on its own (the next local write's commit does):
                # an operation that a power loss puts back in the queue is sent again.  The
                # store runs it at the start of its next call (a sequential writer's next
                # write), which saves a thread hop per acknowledgment; at the latest after
                # DEQUEUE_FLUSH_DELAY.
                await self._store.acknowledge_soon(op_ids)
                flush_at = trio.current_time() + DEQUEUE_FLUSH_DELAY
            self._dequeuing.difference_update(op_ids)
            self._board.acknowledged(time.time())
            self._refresh_pending()
            for batch_id, ids in batches:
                self._emit("sync:acknowledged", {"batch_id": batch_id, "operations": len(ids)})

    def _refresh_pending(self) -> None:
        self._board.pending(len(self._queue) + len(self._dequeuing))
