"""``CommitSignal``: wakes every ``wait_for_new`` caller when the delivery sequence grows."""

from __future__ import annotations

import trio

from kora.core.errors import ClosedError


class CommitSignal:
    """The highest delivery sequence this process knows of, and a broadcast when it grows.

    Only call it from the trio thread (the PostgreSQL listener thread goes through
    ``TrioToken.run_sync_soon``).  A waiter never misses an advance: it re-checks the value
    after every wake-up, and each advance replaces the event that waiters park on.
    """

    def __init__(self, known: int = 0) -> None:
        self._known = known
        self._changed = trio.Event()
        self._closed = False

    @property
    def known(self) -> int:
        return self._known

    def advance(self, delivery_sequence: int) -> None:
        """Record a committed delivery sequence (lower or equal values are ignored)."""
        if delivery_sequence > self._known:
            self._known = delivery_sequence
            self._wake()

    def close(self) -> None:
        """Make current and future waiters raise ``ClosedError``."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def wait_above(self, after: int) -> int:
        """Return the known maximum once it is above ``after``.

        Always a checkpoint, and only one: the wait for an advance is the scheduling round,
        so a woken waiter returns at once (one task step per commit, not two).
        """
        if self._closed:
            raise ClosedError("the server store is closed")
        if self._known > after:
            await trio.lowlevel.checkpoint()
            return self._known
        while True:
            await self._changed.wait()
            if self._closed:
                raise ClosedError("the server store is closed")
            if self._known > after:
                return self._known
