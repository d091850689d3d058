"""``ReceiverActor``: everything the server sends after the handshake-response.

For each frame it asks the connection's protocol session what to do and does it:

* delivery and legacy batches are applied to the store, then acknowledged by the session's
  watermark rules (spec 4.4).  The watermark a batch earns is written in the transaction that
  applies it; a group with no operations at all (the server skipped what we do not receive)
  only leaves its watermark for the store's next transaction (see ``_skip``).  Batches that are already waiting when one is applied (a catch-up, a burst)
  are applied together, up to ``MAX_GROUP_OPERATIONS`` operations in one transaction, and
  acknowledged, all of them, only once it committed.  When a group fails to apply, nothing
  of it is acknowledged and the connection is ended, so the next one resumes from the
  durable watermark;
* other watermark moves (a reset at the handshake) are persisted under the current view;
* acknowledgments of our batches go to the outbound queue actor, which dequeues durably;
* ``operation-rejected`` moves the operation to the store's rejected list (an event says so);
  when ``retriable`` it is only refused for now: it stays queued and the queue actor sends
  it again later (``RetryLater``; the event says ``will_retry``);
* ``error``: ``AUTH_FAILED`` stops automatic retries, ``INVALID_TIMESTAMP`` is fatal, any
  other code ends the connection so that it is reopened (the batch in flight is resent).

It also watches acknowledgments: when the oldest batch in flight has waited ``ack_timeout``
seconds, the connection is presumed dead and ended (spec 5.4).

Acknowledgments of delivery batches never hold up receiving.  The server may not read
while it streams (ours sends a whole catch-up before it reads again), so once the socket's
buffers are full our acknowledgments cannot leave; if the receiver waited for them it
would stop applying, stop reading, and the server would wait for us to read: a deadlock.
A delivery acknowledgment confirms everything up to its ``deliverySequence`` (the server
keeps the highest, spec 4.4), so while the outgoing mailbox is full only the newest one is
kept and a small task sends it as soon as there is room: memory stays bounded and what the
server learns is only ever late, never wrong.  Other frames (legacy acknowledgments) are
sent in order as before.

Frames are decoded in the trio thread before or after the store's work, never while the
store's thread runs Python or binds rows (the two would take turns on the GIL, row by
row), with one exception: SQLite's commit (writing and syncing the WAL) holds no GIL, so
the frames that arrived meanwhile are decoded while a group commits (``_CommitWindow``).
"""

from __future__ import annotations

import logging
from collections import deque
from contextlib import ExitStack
from functools import partial
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
from kora.protocol.client import ClientSession, ClientState
from kora.protocol.errors import RemoteProtocolError
from kora.protocol.messages import Acknowledgment
from kora.store import Store
from kora.store.errors import StoreFailedError
from kora.sync._gc import catching_up
from kora.sync._messages import (
    BatchAcked,
    EventEmitter,
    Link,
    OutboundMessage,
    QueueChanged,
    RetryLater,
    Streaming,
    post,
)
from kora.sync.diagnostics import MetricMessage, OperationsReceived
from kora.sync.errors import ConnectionEnded
from kora.sync.status import StatusBoard
from kora.sync.transport import Frame

__all__ = ["MAX_GROUP_OPERATIONS", "ReceiverActor"]

log: Final = logging.getLogger("kora.sync")

#: At most this many received operations are applied in one store transaction.  Bigger
#: groups save commits during a catch-up; this bound keeps one transaction's memory and the
#: time until its acknowledgments go out modest.
MAX_GROUP_OPERATIONS: Final = 5000
#: At most this many waiting frames are taken at once to join a group.
_MAX_PULLED_FRAMES: Final = 64


class _CommitWindow:
    """What was decoded while one group committed: the actions wait for the commit (they
    run after the group's own), a fatal error is raised once the commit is over."""

    def __init__(self) -> None:
        self.actions: list[Action] = []
        self.error: ConnectionEnded | None = None


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
        #: The newest delivery acknowledgment that found the outgoing mailbox full.
        self._late_ack: SendFrame | None = None
        self._late_ack_set = trio.Event()
        #: The group being applied (None between applies), and the store's signal that its
        #: commit began (set from the store's thread through the trio token).
        self._window: _CommitWindow | None = None
        self._commit_began = trio.Event()
        #: Holds ``catching_up()`` until the session reaches streaming.
        self._catch_up = ExitStack()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        session = self._link.session
        with self._frames_in, self._frames_out, self._outbound, self._metrics, self._catch_up:
            if session.state is not ClientState.STREAMING:
                # Until the exchange after the handshake is complete: see kora.sync._gc.
                self._catch_up.enter_context(catching_up())
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._send_late_acks)
                    nursery.start_soon(self._decode_while_committing)
                    task_status.started()
                    while True:
                        frame = await self._next_frame()
                        await self._act(self._decode(session, frame))
            except BaseExceptionGroup as group:
                # The helper never fails by itself: the loop's end, unwrapped, says why.
                if len(group.exceptions) == 1 and isinstance(group.exceptions[0], ConnectionEnded):
                    raise group.exceptions[0]  # noqa: B904 - its own cause is kept
                raise

    async def _send(self, action: SendFrame) -> None:
        message = action.message
        if not isinstance(message, Acknowledgment) or message.delivery_sequence is None:
            await post(self._frames_out, action.frame)
        elif self._late_ack is not None:
            self._late_ack = action  # covers the one waiting (acknowledgments are cumulative)
        else:
            try:
                self._frames_out.send_nowait(action.frame)
            except trio.WouldBlock:
                self._late_ack = action
                self._late_ack_set.set()

    async def _send_late_acks(self) -> None:
        while True:
            await self._late_ack_set.wait()
            self._late_ack_set = trio.Event()
            late = self._late_ack
            if late is not None:
                await self._frames_out.send(late.frame)
                if self._late_ack is late:
                    self._late_ack = None
                else:
                    self._late_ack_set.set()  # a newer one came meanwhile

    async def _decode_while_committing(self) -> None:
        session = self._link.session
        while True:
            await self._commit_began.wait()
            self._commit_began = trio.Event()
            window = self._window
            if window is None or window.error is not None:
                continue  # that apply is already over (its signal came late)
            try:
                self._take_arrived(session, window.actions)
            except ConnectionEnded as exc:
                window.error = exc

    @staticmethod
    def _decode(session: ClientSession, frame: Frame) -> list[Action]:
        try:
            return session.receive_frame(frame)
        except RemoteProtocolError as exc:
            if exc.fatal:
                raise ConnectionEnded(f"protocol error: {exc}") from exc
            log.warning("ignored a frame from the server: %s", exc)
            return []

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
        # The same sum as _ack_deadline: a difference could round below the timeout at the
        # deadline itself and never fire.
        if trio.current_time() >= self._watched_since + self._ack_timeout:
            raise ConnectionEnded(
                f"Timed out waiting for acknowledgment of outbound batch {self._watched}"
            )

    async def _act(self, initial: list[Action]) -> None:
        actions = deque(initial)
        while actions:
            action = actions.popleft()
            if isinstance(action, SendFrame):
                await self._send(action)
            elif isinstance(action, ApplyBatch):
                actions.extend(await self._apply(action))
            elif isinstance(action, WatermarkChanged):
                await self._store.set_delivery_watermark(self._view, action.watermark)
            elif isinstance(action, BatchAcknowledged):
                await post(
                    self._outbound,
                    BatchAcked(self._link.id, action.batch.message_id, trio.current_time()),
                )
            elif isinstance(action, ReachedStreaming):
                self._catch_up.close()
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
        """Apply ``action``'s batch, with the batches already waiting behind it, in one
        transaction that also stores the watermark they earn; acknowledge after the commit.

        To get at a waiting batch, the session must be told that the one before it applied
        (``batch_applied``) before the commit: the actions that returns (acknowledgments
        above all) are held back until the commit, and a failed commit ends the connection
        instead, so nothing unstored is ever acknowledged.

        Frames are decoded before or after the store's work, never during it: the store's
        thread needs the GIL between SQLite steps, and a decoding task would hold it.
        """
        session = self._link.session
        group = [action.batch]
        size = len(action.batch.operations)
        held: list[Action] = []  # taken once the group is durable, in order
        watermark: int | None = None
        self._take_arrived(session, held)
        while True:
            following: ApplyBatch | None = None
            for outcome in session.batch_applied(group[-1].message_id):
                if isinstance(outcome, WatermarkChanged):
                    watermark = outcome.watermark
                elif (
                    isinstance(outcome, ApplyBatch)
                    and following is None
                    and size < MAX_GROUP_OPERATIONS
                ):
                    following = outcome
                else:
                    held.append(outcome)
            if following is None:
                break
            group.append(following.batch)
            size += len(following.batch.operations)
        operations = [op for batch in group for op in batch.operations]
        self._board.exchange_started()
        if not operations:
            await self._skip(watermark)
            return held
        window = self._window = _CommitWindow()
        began = partial(trio.lowlevel.current_trio_token().run_sync_soon, self._commit_began.set)
        try:
            result = await self._store.apply_remote(
                operations,
                watermark=None if watermark is None else (self._view, watermark),
                before_commit=began,
            )
        except StoreFailedError as exc:
            ids = ", ".join(batch.message_id for batch in group)
            log.error("could not apply batch(es) %s: %s", ids, exc)
            raise ConnectionEnded(f"could not apply received batches: {exc}") from exc
        finally:
            self._window = None
        if window.error is not None:
            raise window.error
        held.extend(window.actions)  # their frames came after the group's
        # The event goes out right after the commit, before anything else is awaited.
        if operations:
            await post(self._metrics, OperationsReceived(len(operations)))
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
        if any(rejection.retriable for rejection in result.rejected):
            # Refused for now (clock drift): the store kept the old watermark, so nothing of
            # the group is acknowledged and the next connection is sent it again.
            raise ConnectionEnded("received operations refused for now; they will be resent")
        return held

    async def _skip(self, watermark: int | None) -> None:
        """A group without operations: the server skipped operations we do not receive
        (our own, out of scope) and only moves the watermark.  Nothing is applied, so
        nothing needs to be durable before the acknowledgment: the store writes the
        watermark with its next transaction, unsynced (``set_delivery_watermark_soon``;
        losing it only makes the next connection deliver again what the store drops by
        id).  That saves a thread hop and a synced commit per such batch, and a writing
        client gets one every few hundred of its own operations."""
        if watermark is not None:
            await self._store.set_delivery_watermark_soon(self._view, watermark)

    def _take_arrived(self, session: ClientSession, held: list[Action]) -> None:
        """Hand the frames that already arrived to the session (their batches queue behind
        the one being applied); other actions they cause go to ``held``."""
        for _ in range(_MAX_PULLED_FRAMES):
            try:
                frame = self._frames_in.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return  # an ended channel is noticed by the next receive
            held.extend(self._decode(session, frame))

    async def _rejected(self, action: OperationRejectedReceived) -> None:
        message = action.message
        if message.retriable:
            # Refused for now (a validator that threw, a rate limit): unlike the Kora.js
            # client, which drops it for good, keep it queued and send it again later.  The
            # queue actor hears of it before the batch's acknowledgment (same mailbox, in
            # order), so that acknowledgment does not dequeue it.
            await post(self._outbound, RetryLater(self._link.id, message.operation_id))
            self._emit(
                "sync:operation-rejected",
                {
                    "operation_id": message.operation_id,
                    "collection": message.collection,
                    "record_id": message.record_id,
                    "code": message.code,
                    "message": message.message,
                    "retriable": True,
                    "will_retry": True,
                    "rejection": None,
                    "local": False,
                },
            )
            return
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
                "retriable": False,
                "will_retry": False,
                "rejection": stored,
                "local": False,
            },
        )
        await self._outbound.send(QueueChanged(removed=(message.operation_id,)))

    def _error(self, action: ErrorReceived) -> None:
        message = action.message
        if message.code == "AUTH_FAILED":
            raise ConnectionEnded(message.message, retry=False, auth_failed=True)
        if message.code == "INVALID_TIMESTAMP":
            self._emit("sync:clock-skew", {"source": "server-reject", "message": message.message})
            raise ConnectionEnded(f"{message.code}: {message.message}", retry=False, fatal=True)
        raise ConnectionEnded(f"{message.code}: {message.message}")
