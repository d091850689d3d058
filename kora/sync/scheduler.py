"""``ReconnectScheduler`` and the ``ConnectionScope`` it runs once per connection attempt.

The scheduler obeys ``connect``/``disconnect`` commands and, while connecting is wanted,
runs attempts with the documented delays (:class:`~kora.sync.backoff.ReconnectBackoff`):
attempt 1 at once, attempt 2 after ``reconnect_interval``, then doubling up to
``max_reconnect_interval``.  An attempt whose handshake was accepted resets the count, so a
dropped connection is retried at once.  It stops retrying when

* ``auto_reconnect`` is off (after the first attempt that ends),
* the server refused our credentials (``sync:auth-failed``; status ``error``), or
* the problem is fatal (schema mismatch, clock blocked; status ``error``),

until ``connect()`` is called again.

A :class:`ConnectionScope` is one attempt: a :class:`~actors.Supervisor` (``ONE_FOR_ALL``,
intensity 0) of ``ConnectionActor``, ``HandshakeActor`` and ``ReceiverActor``, started in
that order, inside one cancel scope.  A connection cannot be partly restarted, so any
child's exit ends all three (the supervisor gives up at once) and ``disconnect()`` cancels
the scope; either way nothing of the connection outlives it, and its mailboxes are closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import trio

from actors import (
    ONE_FOR_ALL,
    TRANSIENT,
    ChildSpec,
    ChildStartFailed,
    LifecycleEvent,
    Mailbox,
    Supervisor,
    SupervisorGaveUp,
    Wiring,
)
from kora.protocol.client import ClientSession
from kora.store import Store
from kora.sync._messages import (
    Command,
    Connect,
    Detached,
    Disconnect,
    DropConnection,
    EventEmitter,
    Link,
    OutboundMessage,
)
from kora.sync._view import ScopeMemo, view_signature
from kora.sync.backoff import ReconnectBackoff
from kora.sync.connection import CLOSE_TIMEOUT, ConnectionActor
from kora.sync.diagnostics import ConnectAttempted, ConnectionClosedMetric, MetricMessage
from kora.sync.errors import ConnectionEnded
from kora.sync.handshake import AttemptRecord, HandshakeActor
from kora.sync.options import SyncOptions
from kora.sync.receiver import ReceiverActor
from kora.sync.status import StatusBoard
from kora.sync.transport import Frame, TransportFactory

__all__ = ["FRAME_MAILBOX", "ConnectionScope", "ReconnectScheduler", "connection_ended"]

log: Final = logging.getLogger("kora.sync")

#: Frames buffered between a connection's actors, each direction.
FRAME_MAILBOX: Final = 16
#: Received frames buffered for the receiver: while it applies one group of batches, the
#: next ones gather here and are applied together (see ``kora.sync.receiver``).
INBOUND_FRAME_MAILBOX: Final = 64
#: Seconds a report to the engine-level actors may take while a connection is torn down.
_REPORT_TIMEOUT: Final = 1.0


def connection_ended(exc: BaseException | None) -> ConnectionEnded:
    """The :class:`ConnectionEnded` behind a connection supervisor's failure.

    Looks through ``__cause__`` chains and exception groups; a crash of another kind (a bug)
    is reported as a retriable end with its ``repr``.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [] if exc is None else [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionEnded):
            return current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        if current.__cause__ is not None:
            pending.append(current.__cause__)
    return ConnectionEnded(f"connection failed: {exc!r}")


class ConnectionScope:
    """One connection attempt (see the module docstring).

    Args:
        link_id: Unique per engine; tags every message about this connection.
        factory: Opens the transport.
        store, options, board, emit, scope_memo: Shared with the engine.
        outbound: A send end of the outbound queue actor's mailbox.
        metrics: A send end of the diagnostics mailbox.
        attempt: Filled in by the handshake actor.
        lifecycle: Where the connection supervisor reports its children's lifecycle.
    """

    def __init__(
        self,
        *,
        link_id: int,
        factory: TransportFactory,
        store: Store,
        options: SyncOptions,
        board: StatusBoard,
        emit: EventEmitter,
        scope_memo: ScopeMemo,
        outbound: Mailbox[OutboundMessage],
        metrics: Mailbox[MetricMessage],
        attempt: AttemptRecord,
        lifecycle: trio.MemorySendChannel[LifecycleEvent] | None = None,
    ) -> None:
        self._link_id = link_id
        self._factory = factory
        self._store = store
        self._options = options
        self._board = board
        self._emit = emit
        self._scope_memo = scope_memo
        self._outbound = outbound
        self._metrics = metrics
        self.attempt = attempt
        self._lifecycle = lifecycle
        self.cancel_scope = trio.CancelScope()
        self._dropped: ConnectionEnded | None = None

    @property
    def link_id(self) -> int:
        return self._link_id

    def drop(self, reason: str) -> None:
        """End this connection now; the scheduler reconnects at once."""
        if self._dropped is None:
            self._dropped = ConnectionEnded(reason)
        self.cancel_scope.cancel()

    async def run(self) -> ConnectionEnded:
        """Run the attempt to its end; return why it ended.

        Cancelling ``cancel_scope`` (a disconnect) ends it with the reason
        ``"disconnected by the app"``.
        """
        ended = ConnectionEnded("disconnected by the app", retry=False)
        options = self._options
        with (
            Mailbox[Frame](FRAME_MAILBOX) as frames_out,
            Mailbox[Frame](INBOUND_FRAME_MAILBOX) as frames_in,
        ):
            session = ClientSession(
                node_id=self._store.node_id,
                schema_version=options.schema_version,
                binary=options.wire_format != "json",
                window=options.window,
            )
            link = Link(self._link_id, session, frames_out)
            supervisor = self._supervisor(link, frames_out, frames_in)
            try:
                with self.cancel_scope:
                    try:
                        await supervisor.run()
                    except (ChildStartFailed, SupervisorGaveUp) as exc:
                        ended = connection_ended(exc)
                if self.cancel_scope.cancelled_caught and self._dropped is not None:
                    ended = self._dropped
            finally:
                session.close()
                frames_out.close()
                frames_in.close()
        return ended

    def _supervisor(
        self, link: Link, frames_out: Mailbox[Frame], frames_in: Mailbox[Frame]
    ) -> Supervisor:
        options = self._options

        def connection(wiring: Wiring) -> ConnectionActor:
            return ConnectionActor(
                factory=self._factory,
                frames_out=wiring.receiver(frames_out),
                frames_in=wiring.sender(frames_in),
                metrics=wiring.sender(self._metrics),
            )

        def handshake(wiring: Wiring) -> HandshakeActor:
            return HandshakeActor(
                link=link,
                store=self._store,
                options=options,
                frames_in=wiring.receiver(frames_in),
                frames_out=wiring.sender(frames_out),
                outbound=wiring.sender(self._outbound),
                metrics=wiring.sender(self._metrics),
                board=self._board,
                emit=self._emit,
                scope_memo=self._scope_memo,
                attempt=self.attempt,
            )

        def receiver(wiring: Wiring) -> ReceiverActor:
            return ReceiverActor(
                link=link,
                store=self._store,
                view=view_signature(self._scope_memo.scope),
                ack_timeout=options.ack_timeout,
                frames_in=wiring.receiver(frames_in),
                frames_out=wiring.sender(frames_out),
                outbound=wiring.sender(self._outbound),
                metrics=wiring.sender(self._metrics),
                board=self._board,
                emit=self._emit,
            )

        return Supervisor(
            [
                # The connection gets time for a graceful close when stopped.
                ChildSpec(
                    id="connection", start=connection, restart=TRANSIENT, shutdown=CLOSE_TIMEOUT
                ),
                ChildSpec(id="handshake", start=handshake, restart=TRANSIENT, shutdown=0),
                ChildSpec(id="receiver", start=receiver, restart=TRANSIENT, shutdown=0),
            ],
            strategy=ONE_FOR_ALL,
            intensity=0,
            events=self._lifecycle,
            name=f"connection-{self._link_id}",
        )


class ReconnectScheduler:
    """Connect and disconnect commands, the backoff table, one attempt at a time.

    Args:
        commands: This actor's mailbox.
        open_scope: Makes the :class:`ConnectionScope` of attempt ``n`` (1-based within the
            current run of attempts).
        backoff: The delays.
        auto_reconnect: Whether to retry by itself.
        outbound: A send end to the outbound queue actor's mailbox (for ``Detached``).
        metrics: A send end to the diagnostics mailbox.
        board: The status board.
        emit: Publishes app events.
    """

    def __init__(
        self,
        *,
        commands: trio.MemoryReceiveChannel[Command],
        open_scope: Callable[[AttemptRecord], ConnectionScope],
        backoff: ReconnectBackoff,
        auto_reconnect: bool,
        outbound: trio.MemorySendChannel[OutboundMessage],
        metrics: trio.MemorySendChannel[MetricMessage],
        board: StatusBoard,
        emit: EventEmitter,
    ) -> None:
        self._commands = commands
        self._open_scope = open_scope
        self._backoff = backoff
        self._auto_reconnect = auto_reconnect
        self._outbound = outbound
        self._metrics = metrics
        self._board = board
        self._emit = emit
        self._loop_scope: trio.CancelScope | None = None
        self._loop_done = trio.Event()
        self._current: ConnectionScope | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._commands, self._outbound, self._metrics:
            async with trio.open_nursery() as nursery:
                task_status.started()
                async for command in self._commands:
                    if isinstance(command, Connect):
                        if self._loop_scope is None:
                            self._board.reset_error()
                            self._loop_scope = trio.CancelScope()
                            self._loop_done = trio.Event()
                            nursery.start_soon(self._attempts, self._loop_scope)
                        command.reply.send(None)
                    elif isinstance(command, Disconnect):
                        if self._loop_scope is not None:
                            self._loop_scope.cancel()
                            await self._loop_done.wait()
                        command.reply.send(None)
                    elif isinstance(command, DropConnection) and self._current is not None:
                        self._current.drop(command.reason)
                nursery.cancel_scope.cancel()

    async def _attempts(self, scope: trio.CancelScope) -> None:
        try:
            with scope:
                await self._retry_loop()
        finally:
            self._loop_scope = None
            self._loop_done.set()
            self._board.offline()

    async def _retry_loop(self) -> None:
        attempt_number = 1
        while True:
            delay = self._backoff.delay(attempt_number)
            if delay > 0:
                self._emit("sync:reconnecting", {"attempt": attempt_number, "delay": delay})
                await trio.sleep(delay)
            record = AttemptRecord(number=attempt_number)
            ended = await self._run_attempt(record)
            if ended.auth_failed:
                self._board.failed(ended.reason, auth_failed=True)
                self._emit("sync:auth-failed", {"reason": ended.reason})
                return
            if ended.fatal:
                self._board.failed(ended.reason)
                self._emit("sync:error", {"reason": ended.reason})
                return
            self._board.offline()
            if not self._auto_reconnect or not ended.retry:
                return
            attempt_number = 1 if record.accepted else attempt_number + 1

    async def _run_attempt(self, record: AttemptRecord) -> ConnectionEnded:
        connection = self._open_scope(record)
        await self._metrics.send(ConnectAttempted())
        ended = ConnectionEnded("disconnected by the app", retry=False)
        self._current = connection
        try:
            ended = await connection.run()
        finally:
            self._current = None
            # Runs on a disconnect (cancellation) too: reports are bounded so that a
            # disconnect never hangs here.
            if record.accepted:
                with trio.move_on_after(_REPORT_TIMEOUT, shield=True):
                    await self._outbound.send(Detached(connection.link_id))
                    await self._metrics.send(ConnectionClosedMetric())
                self._emit("sync:disconnected", {"reason": ended.reason})
            else:
                self._emit(
                    "sync:connect-failed", {"reason": ended.reason, "attempt": record.number}
                )
            log.info("sync attempt %d ended: %s", record.number, ended.reason)
        return ended
