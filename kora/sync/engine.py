"""The sync engine: ``SyncSupervisor``, the ``SyncEngine`` handle (``app.sync``), ``open_sync``.

Theory of operation
-------------------

``open_sync(store, options, emit=...)`` runs the engine for the duration of an ``async
with`` block (``open_app`` does this when given ``sync=SyncOptions(...)``).  Inside, one
``SyncSupervisor`` (``ONE_FOR_ONE``) supervises three long-lived actors::

    SyncSupervisor (ONE_FOR_ONE)
    ├── DiagnosticsActor      metric events in -> Diagnostics
    ├── OutboundQueueActor    the durable queue's live view: delta, batches, window, acks
    └── ReconnectScheduler    connect/disconnect, backoff, one ConnectionScope per attempt
        └── ConnectionScope   (ONE_FOR_ALL, one cancel scope)
            ├── ConnectionActor   transport: frames in, frames out
            ├── HandshakeActor    auth, handshake, negotiation, accept/reject
            └── ReceiverActor     inbound batches -> store -> acks; our acks -> queue actor

They talk only over bounded mailboxes (``actors.Mailbox``; capacities below), whose
originals live here so that a restarted actor takes fresh clones.  Two things are shared by
reference, each with a single writer: the :class:`~kora.sync.status.StatusBoard` (status
is readable synchronously at any time) and the diagnostics recorder (written only by the
diagnostics actor).

The engine does not connect by itself: ``await app.sync.connect()`` starts the attempts
(the reference's ``autoConnect`` is false by default too).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Final

import trio

from actors import (
    ONE_FOR_ONE,
    ChildSpec,
    LifecycleEvent,
    Mailbox,
    Supervisor,
    SupervisorGaveUp,
    Wiring,
    ask,
)
from kora.core.errors import ClosedError
from kora.store import Store
from kora.sync._messages import (
    Command,
    Connect,
    Disconnect,
    DropConnection,
    EventEmitter,
    OutboundMessage,
    QueueChanged,
)
from kora.sync._view import ScopeMemo
from kora.sync.backoff import ReconnectBackoff
from kora.sync.diagnostics import (
    Diagnostics,
    DiagnosticsActor,
    DiagnosticsQuery,
    DiagnosticsRecorder,
    MetricMessage,
)
from kora.sync.errors import AuthFailedError, SyncFailedError
from kora.sync.handshake import AttemptRecord
from kora.sync.options import SyncOptions
from kora.sync.outbound import ChangeFlag, OutboundQueueActor
from kora.sync.scheduler import ConnectionScope, ReconnectScheduler
from kora.sync.status import StatusBoard, StatusSnapshot, StatusWatch, SyncStatus
from kora.sync.transport import TransportFactory

__all__ = ["SyncEngine", "open_sync", "transport_factory"]

log: Final = logging.getLogger("kora.sync")

#: Mailbox capacities (bounded on purpose; producers wait when full, see each actor).
METRICS_MAILBOX: Final = 256
OUTBOUND_MAILBOX: Final = 64
COMMANDS_MAILBOX: Final = 8
#: Seconds ``connect()``/``disconnect()`` wait for the scheduler to take the command.
COMMAND_TIMEOUT: Final = 30.0


def transport_factory(options: SyncOptions) -> TransportFactory:
    """The transport factory ``options.transport`` names."""
    choice = options.transport
    if choice == "websocket":
        from kora.sync.websocket import open_websocket_transport

        return partial(
            open_websocket_transport,
            _websocket_url(options.url),
            connect_timeout=options.connect_timeout,
            max_message_size=options.max_message_size,
        )
    if choice == "long-polling":
        from kora.sync.long_polling import open_long_polling_transport

        return partial(
            open_long_polling_transport,
            _http_url(options.url),
            connect_timeout=options.connect_timeout,
            poll_interval=options.poll_interval,
        )
    assert callable(choice)
    return choice


def _websocket_url(url: str) -> str:
    if url.startswith("http://") or url.startswith("https://"):
        return "ws" + url[4:]
    return url


def _http_url(url: str) -> str:
    if url.startswith("ws://") or url.startswith("wss://"):
        return "http" + url[2:]
    return url


class SyncEngine:
    """The running sync engine of an app (``app.sync``); made by :func:`open_sync`."""

    def __init__(
        self,
        *,
        options: SyncOptions,
        store: Store,
        board: StatusBoard,
        commands: Mailbox[Command],
        metrics: Mailbox[MetricMessage],
        changed: ChangeFlag,
    ) -> None:
        self.options = options
        self._store = store
        self._board = board
        self._commands = commands
        self._metrics = metrics
        self._changed = changed
        self._closed = False

    # ------------------------------------------------------------------ commands

    async def connect(self) -> None:
        """Start connecting (and reconnecting, per the options); returns at once.

        Also the way out of ``error`` (after an auth rejection or a schema mismatch): it
        clears the error and tries again.  Await :meth:`wait_synced` to know when the
        exchange is done.
        """
        await self._command(Connect)

    async def disconnect(self) -> None:
        """Close the connection and stop reconnecting; returns once nothing of the
        connection is left (its tasks ended, its transport closed).  Local writes keep
        queueing; ``connect()`` resumes."""
        await self._command(Disconnect)

    async def _command(self, make: type[Connect] | type[Disconnect]) -> None:
        if self._closed:
            raise ClosedError("the sync engine stopped (its app was closed)")
        with self._commands.sender() as commands:
            await ask(commands, make, timeout=COMMAND_TIMEOUT)

    def note_local_operation(self) -> None:
        """Kept for callers of earlier versions; nothing needs to call it.

        The outbound queue actor hears of every committed local write from the store's
        queue listener, so ``pending_operations`` and ``status`` are current at once.
        """
        self._changed.set()

    # ------------------------------------------------------------------ status

    @property
    def status(self) -> SyncStatus:
        """``offline``, ``connected``, ``syncing``, ``synced`` or ``error`` (a ``str`` enum)."""
        return self._board.snapshot.status

    @property
    def status_info(self) -> StatusSnapshot:
        """The whole status: status, pending operations, last synced time, error."""
        return self._board.snapshot

    @property
    def pending_operations(self) -> int:
        """Local operations not yet acknowledged by the server (refreshed after every
        local write and every acknowledgment)."""
        return self._board.snapshot.pending_operations

    @property
    def last_synced_at(self) -> float | None:
        """Unix time of the last completed exchange or acknowledgment (None before)."""
        return self._board.snapshot.last_synced_at

    def watch_status(self) -> StatusWatch:
        """``async with app.sync.watch_status() as statuses: async for s in statuses``.

        Yields the current :class:`StatusSnapshot` first, then each change (latest wins).
        """
        return self._board.watch()

    async def wait_synced(self) -> None:
        """Wait until the engine is ``synced``: streaming, nothing queued or in flight.

        Raises:
            AuthFailedError: The server refused our credentials.
            SyncFailedError: The engine is in ``error`` (schema mismatch, clock blocked).
            ClosedError: The engine stopped.
        """
        while True:
            snapshot = self._board.snapshot
            if snapshot.status is SyncStatus.ERROR:
                if snapshot.auth_failed:
                    raise AuthFailedError(snapshot.error or "authentication failed")
                raise SyncFailedError(snapshot.error or "sync failed")
            # The store is the truth about the queue (the board may lag a fresh write).
            if snapshot.status is SyncStatus.SYNCED and await self._store.pending_count() == 0:
                return
            if self._board.snapshot != snapshot:
                continue
            await self._board.wait_changed(snapshot)

    async def diagnostics(self) -> Diagnostics:
        """Measured figures; every frame and batch handled before the call is counted."""
        if self._closed:
            raise ClosedError("the sync engine stopped (its app was closed)")
        with self._metrics.sender() as metrics:
            return await ask(metrics, DiagnosticsQuery, timeout=COMMAND_TIMEOUT)


class _Emitter:
    """Publishes app events; never lets a failing bus break the engine."""

    def __init__(self, emit: EventEmitter | None) -> None:
        self._emit = emit

    def __call__(self, name: str, payload: Mapping[str, object]) -> object:
        if self._emit is None:
            return None
        try:
            return self._emit(name, payload)
        except ClosedError:
            return None  # the app is closing


@asynccontextmanager
async def open_sync(
    store: Store,
    options: SyncOptions,
    *,
    emit: EventEmitter | None = None,
    lifecycle: trio.MemorySendChannel[LifecycleEvent] | None = None,
) -> AsyncIterator[SyncEngine]:
    """Run the sync engine of ``store`` for the duration of the block.

    Args:
        store: The app's local store.
        options: How to sync.
        emit: Publishes app events (``app.events.emit``).
        lifecycle: Where every supervisor of the engine (the connection scopes included)
            reports its children's lifecycle events (for diagnostics and tests).

    Yields:
        The :class:`SyncEngine` handle.
    """
    emitter = _Emitter(emit)
    board = StatusBoard(
        on_change=lambda snapshot: emitter(
            "sync:status",
            {
                "status": snapshot.status.value,
                "pending_operations": snapshot.pending_operations,
                "last_synced_at": snapshot.last_synced_at,
                "error": snapshot.error,
            },
        )
    )
    recorder = DiagnosticsRecorder()
    changed = ChangeFlag()
    factory = transport_factory(options)
    scope_memo = await ScopeMemo.load(store)
    link_ids = iter(range(1, 2**62))
    backoff = ReconnectBackoff(
        initial=options.reconnect_interval,
        maximum=options.max_reconnect_interval,
        jitter=options.reconnect_jitter,
    )
    with (
        Mailbox[MetricMessage](METRICS_MAILBOX) as metrics,
        Mailbox[OutboundMessage](OUTBOUND_MAILBOX) as outbound,
        Mailbox[Command](COMMANDS_MAILBOX) as commands,
        outbound.sender() as wake,
        commands.sender() as restart_notices,
    ):

        def on_local_write(_: object) -> None:
            # Only local writes enqueue (remote applies, acknowledgments and rejections
            # leave the queue alone or are posted by who made them), so the queue actor is
            # woken by the queue listener: an applied delivery does not wake it for nothing.
            changed.set()
            try:
                wake.send_nowait(QueueChanged())
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the flag is read after every message the actor handles

        def open_scope(record: AttemptRecord) -> ConnectionScope:
            return ConnectionScope(
                link_id=next(link_ids),
                factory=factory,
                store=store,
                options=options,
                board=board,
                emit=emitter,
                scope_memo=scope_memo,
                outbound=outbound,
                metrics=metrics,
                attempt=record,
                lifecycle=lifecycle,
            )

        def diagnostics_actor(wiring: Wiring) -> DiagnosticsActor:
            return DiagnosticsActor(recorder, wiring.receiver(metrics))

        def outbound_actor(wiring: Wiring) -> OutboundQueueActor:
            changed.set()  # a restarted run re-reads the queue
            if wiring.generation > 0:
                # The new run knows no connection: have the current one replaced, so that
                # the next handshake attaches it again (nothing is lost: the queue is
                # durable and the server drops what it already has).
                try:
                    restart_notices.send_nowait(DropConnection("the outbound queue restarted"))
                except trio.WouldBlock:
                    log.warning("could not ask for a reconnection after a queue restart")
            return OutboundQueueActor(
                store=store,
                batch_size=options.batch_size,
                inbox=wiring.receiver(outbound),
                metrics=wiring.sender(metrics),
                board=board,
                emit=emitter,
                changed=changed,
            )

        def scheduler_actor(wiring: Wiring) -> ReconnectScheduler:
            return ReconnectScheduler(
                commands=wiring.receiver(commands),
                open_scope=open_scope,
                backoff=backoff,
                auto_reconnect=options.auto_reconnect,
                outbound=wiring.sender(outbound),
                metrics=wiring.sender(metrics),
                board=board,
                emit=emitter,
            )

        supervisor = Supervisor(
            [
                ChildSpec(id="diagnostics", start=diagnostics_actor),
                ChildSpec(id="outbound-queue", start=outbound_actor),
                ChildSpec(id="reconnect-scheduler", start=scheduler_actor),
            ],
            strategy=ONE_FOR_ONE,
            intensity=3,
            period=10.0,
            events=lifecycle,
            name="sync",
        )
        engine = SyncEngine(
            options=options,
            store=store,
            board=board,
            commands=commands,
            metrics=metrics,
            changed=changed,
        )
        remove_listener = store.add_queue_listener(on_local_write)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(_supervise, supervisor, board))
                try:
                    yield engine
                finally:
                    engine._closed = True
                    nursery.cancel_scope.cancel()
        finally:
            remove_listener()
            board.close()


async def _supervise(
    supervisor: Supervisor,
    board: StatusBoard,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        await supervisor.run(task_status=task_status)
    except SupervisorGaveUp as exc:
        # The app keeps working offline; the engine reports the failure and stays down.
        log.error("the sync engine stopped: %s", exc, exc_info=exc)
        board.failed(f"the sync engine stopped: {exc}")
