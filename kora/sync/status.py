"""The engine's status: one current snapshot, readable at any time and watchable.

``StatusBoard`` is the single owner of the snapshot.  Actors update it with synchronous
calls (never blocking, never awaiting); watchers get the newest snapshot with latest-wins
semantics (a buffer of one), so a slow watcher never holds anything up and never sees a
stale value after catching up.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from types import TracebackType

import attrs
import trio

from kora.core.errors import ClosedError

__all__ = ["StatusBoard", "StatusSnapshot", "StatusWatch", "SyncStatus"]


class SyncStatus(enum.StrEnum):
    """Where the engine is.

    * ``OFFLINE``: no connection (not started, disconnected, or waiting to reconnect).
    * ``CONNECTED``: the handshake was accepted; the exchange has not started yet.
    * ``SYNCING``: catching up in either direction, or local operations wait to be sent.
    * ``SYNCED``: streaming live, nothing pending.
    * ``ERROR``: a problem that automatic retries cannot fix (schema mismatch, rejected
      credentials, clock blocked); ``connect()`` tries again.
    """

    OFFLINE = "offline"
    CONNECTED = "connected"
    SYNCING = "syncing"
    SYNCED = "synced"
    ERROR = "error"


@attrs.frozen(kw_only=True)
class StatusSnapshot:
    """The engine's status at one moment.

    Attributes:
        status: See :class:`SyncStatus`.
        pending_operations: Local operations not yet acknowledged by the server.
        last_synced_at: Unix time (seconds) of the last completed exchange or
            acknowledgment; None before the first.
        error: What went wrong, when ``status`` is ``ERROR`` (else None).
        auth_failed: The last attempt was refused with ``AUTH_FAILED``; automatic retries
            are stopped until ``connect()``.
    """

    status: SyncStatus = SyncStatus.OFFLINE
    pending_operations: int = 0
    last_synced_at: float | None = None
    error: str | None = None
    auth_failed: bool = False


class StatusBoard:
    """Owns the current :class:`StatusSnapshot` (see the module docstring).

    Args:
        on_change: Called synchronously with each new snapshot (to emit ``sync:status``).
    """

    def __init__(self, on_change: Callable[[StatusSnapshot], object] | None = None) -> None:
        self._snapshot = StatusSnapshot()
        self._on_change = on_change
        self._changed = trio.Event()
        self._streaming = False
        self._connected = False
        self._closed = False

    @property
    def snapshot(self) -> StatusSnapshot:
        return self._snapshot

    # ------------------------------------------------------------------ updates

    def connected(self) -> None:
        """The handshake was accepted (a new exchange begins)."""
        self._connected = True
        self._streaming = False
        self._publish(
            attrs.evolve(self._snapshot, status=SyncStatus.CONNECTED, error=None, auth_failed=False)
        )

    def exchange_started(self) -> None:
        """The first batch of the exchange went out or came in."""
        if self._connected and not self._streaming:
            self._publish(attrs.evolve(self._snapshot, status=SyncStatus.SYNCING))

    def streaming(self, now: float) -> None:
        """Both directions of the post-handshake exchange are complete."""
        self._streaming = True
        self._publish(attrs.evolve(self._snapshot, status=self._live_status(), last_synced_at=now))

    def pending(self, count: int) -> None:
        """The outbound queue holds ``count`` operations not yet acknowledged."""
        snapshot = self._snapshot
        status = snapshot.status
        if self._connected and self._streaming:
            status = SyncStatus.SYNCED if count == 0 else SyncStatus.SYNCING
        if count == snapshot.pending_operations and status is snapshot.status:
            return  # refreshed after every message of the queue actor: mostly unchanged
        self._publish(attrs.evolve(snapshot, pending_operations=count, status=status))

    def acknowledged(self, now: float) -> None:
        """The server acknowledged one of our batches."""
        self._publish(attrs.evolve(self._snapshot, last_synced_at=now))

    def offline(self) -> None:
        """No connection now (a retry may follow)."""
        self._connected = False
        self._streaming = False
        if self._snapshot.status is not SyncStatus.ERROR:
            self._publish(attrs.evolve(self._snapshot, status=SyncStatus.OFFLINE))

    def failed(self, error: str, *, auth_failed: bool = False) -> None:
        """A problem automatic retries will not fix."""
        self._connected = False
        self._streaming = False
        self._publish(
            attrs.evolve(
                self._snapshot, status=SyncStatus.ERROR, error=error, auth_failed=auth_failed
            )
        )

    def reset_error(self) -> None:
        """``connect()`` was called: leave ``ERROR`` for ``OFFLINE`` and try again."""
        if self._snapshot.status is SyncStatus.ERROR or self._snapshot.auth_failed:
            self._publish(
                attrs.evolve(
                    self._snapshot, status=SyncStatus.OFFLINE, error=None, auth_failed=False
                )
            )

    def close(self) -> None:
        """The engine stopped: watchers end."""
        self._closed = True
        self._changed.set()

    # ------------------------------------------------------------------ reading

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_changed(self, seen: StatusSnapshot) -> StatusSnapshot:
        """Wait until the snapshot differs from ``seen``; return the newest.

        Raises:
            ClosedError: The engine stopped.
        """
        while self._snapshot == seen:
            if self._closed:
                raise ClosedError("the sync engine stopped")
            await self._changed.wait()
        await trio.lowlevel.checkpoint()
        return self._snapshot

    def watch(self) -> StatusWatch:
        """``async with board.watch() as statuses: async for snapshot in statuses``."""
        return StatusWatch(self)

    def _live_status(self) -> SyncStatus:
        return SyncStatus.SYNCED if self._snapshot.pending_operations == 0 else SyncStatus.SYNCING

    def _publish(self, new: StatusSnapshot) -> None:
        if new == self._snapshot:
            return
        self._snapshot = new
        self._changed.set()
        self._changed = trio.Event()
        if self._on_change is not None:
            self._on_change(new)


class StatusWatch:
    """Async iterator of status snapshots: the current one first, then each change.

    Latest wins: after a burst of changes the watcher gets the newest snapshot once.
    Iteration ends when the engine stops.
    """

    def __init__(self, board: StatusBoard) -> None:
        self._board = board
        self._seen: StatusSnapshot | None = None
        self._active = False

    async def __aenter__(self) -> StatusWatch:
        await trio.lowlevel.checkpoint()
        self._active = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._active = False

    def __aiter__(self) -> StatusWatch:
        return self

    async def __anext__(self) -> StatusSnapshot:
        if not self._active:
            raise ClosedError("use the status watch inside its `async with` block")
        if self._seen is None:
            await trio.lowlevel.checkpoint()
            self._seen = self._board.snapshot
            return self._seen
        try:
            self._seen = await self._board.wait_changed(self._seen)
        except ClosedError:
            raise StopAsyncIteration from None
        return self._seen
