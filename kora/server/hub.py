"""Fan-out of "something new was committed" to the live sessions, and the recent operations.

Wake-ups: each session holds a ``Subscription`` whose queue has room for exactly one pending
wake-up; further notifications while one is pending are coalesced into it (they carry no data
a woken session needs: it reads on from its own delivery position).  So a slow or stuck
session costs one slot of memory, a fast publisher never blocks, and nothing is lost.

Operations: a session that commits a batch publishes the committed operations with their
delivery sequences, and the hub keeps the most recent ones in ``RecentOperations``, a bounded
window of the log (by count and by bytes).  A woken session that is caught up to the window
reads from it instead of the store: one commit that reaches 200 sessions costs 200 dictionary
look-ups, not 200 queries serialized on the store's one connection.  A session that is further
behind, or any session while the window is not known to be complete up to the newest commit
(another process's commits on PostgreSQL, a publication still on its way), reads the store as
before.  The window only ever holds facts ("the operation at delivery sequence N is X"), so
reading it or the store gives the same answer.

Commits made by this process are published by the session that made them; commits made by
other processes sharing the store (PostgreSQL) arrive through ``follow_store``, without their
operations.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Final

import trio

from kora.server.logs import fields, get_logger
from kora.server.stores.base import DeliveredOperation
from kora.server.wire import operation_size

__all__ = ["Hub", "RecentOperations", "Subscription"]

log = get_logger(__name__)

#: Operations kept in the hub's window of recent commits (a few seconds of a busy server).
DEFAULT_RECENT_OPERATIONS: Final = 4096
#: Their JSON bytes at most, so that large operations cannot pin much memory.
DEFAULT_RECENT_BYTES: Final = 4 * 1024 * 1024


class Subscription:
    """One session's wake-up (one pending at most, coalescing).

    A flag and a parking lot rather than a memory channel of capacity one: the same
    semantics (a waiting session is woken at once, otherwise one wake-up is kept for its next
    ``wait``), with less work per wake-up when one commit wakes every session.
    """

    __slots__ = ("_closed", "_lot", "_pending", "coalesced", "notified")

    def __init__(self) -> None:
        self._lot = trio.lowlevel.ParkingLot()
        self._pending = False
        self._closed = False
        self.notified = 0
        self.coalesced = 0

    def notify(self) -> None:
        """Wake the session up; never blocks."""
        self.notified += 1
        if self._closed:
            return
        if self._lot:
            self._lot.unpark()  # the waiting session runs next round
        elif self._pending:
            # A wake-up is already pending and will make the session read on.
            self.coalesced += 1
        else:
            self._pending = True

    async def wait(self) -> None:
        """Wait until something was committed since the previous ``wait`` returned."""
        if self._pending:
            self._pending = False
            await trio.lowlevel.checkpoint()
            return
        await self._lot.park()

    def pending(self) -> int:
        return 1 if self._pending else 0

    def close(self) -> None:
        self._closed = True
        self._pending = False
        self._lot.unpark_all()


class RecentOperations:
    """A bounded window of the most recent part of the delivery log, in memory.

    The window holds the operations with delivery sequences ``base + 1 .. end``, without
    gaps.  Operations that arrive ahead of a gap wait aside (``add`` out of order) until the
    gap is filled, or until ``skip_to`` says the gap will never be filled here.

    Args:
        max_operations: Operations kept at most (the oldest go first).
        max_bytes: Their JSON bytes (``operation_size``) at most.
    """

    def __init__(
        self,
        *,
        max_operations: int = DEFAULT_RECENT_OPERATIONS,
        max_bytes: int = DEFAULT_RECENT_BYTES,
    ) -> None:
        self._max_operations = max_operations
        self._max_bytes = max_bytes
        self._window: dict[int, tuple[DeliveredOperation, int]] = {}
        self._ahead: dict[int, tuple[DeliveredOperation, int]] = {}
        self._bytes = 0
        self.base = 0
        self.end = 0

    def __len__(self) -> int:
        return len(self._window)

    @property
    def held_bytes(self) -> int:
        """JSON bytes of the operations in the window."""
        return self._bytes

    def add(
        self, delivered: Iterable[DeliveredOperation], sizes: Mapping[str, int] | None = None
    ) -> None:
        """Remember committed operations (``sizes``: their ``operation_size`` by id, if known)."""
        for item in delivered:
            sequence = item.delivery_sequence
            if sequence <= self.end:
                continue  # already known (or too old to matter)
            size = sizes.get(item.operation.id) if sizes is not None else None
            entry = (item, operation_size(item.operation) if size is None else size)
            if sequence == self.end + 1 or not self._window:
                if sequence != self.end + 1:
                    # An empty window claims nothing yet: start it here.
                    self.base = self.end = sequence - 1
                self._append(entry)
                self._take_ahead()
            else:
                self._ahead[sequence] = entry
        if len(self._ahead) > self._max_operations:
            # A gap that does not fill: give up the window below the waiting operations.
            self.skip_to(min(self._ahead) - 1)
        self._trim()

    def skip_to(self, sequence: int) -> None:
        """Operations up to ``sequence`` were committed but will not be ``add``-ed here (another
        process's): the window restarts after ``sequence``."""
        if sequence <= self.end:
            return
        self._window.clear()
        self._bytes = 0
        self.base = self.end = sequence
        self._ahead = {s: entry for s, entry in self._ahead.items() if s > sequence}
        self._take_ahead()
        self._trim()

    def read(self, after: int, limit: int) -> list[DeliveredOperation] | None:
        """The operations after ``after``, at most ``limit``, up to the window's end; ``None``
        if the window does not start at or before ``after``."""
        if not self.base <= after <= self.end:
            return None
        window = self._window
        return [window[s][0] for s in range(after + 1, min(self.end, after + limit) + 1)]

    def _append(self, entry: tuple[DeliveredOperation, int]) -> None:
        self.end += 1
        self._window[self.end] = entry
        self._bytes += entry[1]

    def _take_ahead(self) -> None:
        while self._ahead:
            entry = self._ahead.pop(self.end + 1, None)
            if entry is None:
                break
            self._append(entry)

    def _trim(self) -> None:
        window = self._window
        while window and (len(window) > self._max_operations or self._bytes > self._max_bytes):
            self.base += 1
            self._bytes -= window.pop(self.base)[1]


class Hub:
    """Wake-up fan-out to every subscribed session, and the window of recent operations.

    Args:
        recent: The window of recent commits (a default-sized one if omitted).
    """

    def __init__(self, recent: RecentOperations | None = None) -> None:
        # A dict, not a set: sessions are woken in subscription order, so a run replays
        # exactly (the simulation's seeds) instead of following memory addresses.
        self._subscriptions: dict[Subscription, None] = {}
        self.max_delivery_sequence = 0
        self.recent = recent if recent is not None else RecentOperations()

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A subscription for the duration of the ``with`` block."""
        subscription = Subscription()
        self._subscriptions[subscription] = None
        try:
            yield subscription
        finally:
            self._subscriptions.pop(subscription, None)
            subscription.close()

    def publish(
        self,
        max_delivery_sequence: int = 0,
        committed: Iterable[DeliveredOperation] = (),
        *,
        sizes: Mapping[str, int] | None = None,
        skip: Subscription | None = None,
    ) -> int:
        """Tell every subscriber that operations up to this sequence may be new.

        Args:
            max_delivery_sequence: The store's maximum after the commit (``0``: unknown,
                wake everyone anyway).
            committed: The operations this process just committed, for the window.  Without
                them, everything up to ``max_delivery_sequence`` is read from the store.
            sizes: ``operation_size`` of ``committed`` by id, when the caller has it.
            skip: A subscriber not to wake: the publishing session, which reads on itself
                once it is done with the batch (its wake-up would only wait for its lock).

        Returns:
            How many subscribers were woken (0 when this sequence was published before).
        """
        recent = self.recent
        committed = tuple(committed)
        if committed:
            recent.add(committed, sizes)
        if max_delivery_sequence > recent.end and (
            not committed or committed[-1].delivery_sequence < max_delivery_sequence
        ):
            recent.skip_to(max_delivery_sequence)
        news = max_delivery_sequence == 0 or max_delivery_sequence > self.max_delivery_sequence
        self.max_delivery_sequence = max(self.max_delivery_sequence, max_delivery_sequence)
        if not news:
            return 0  # every subscriber was woken for this sequence already
        woken = 0
        for subscription in list(self._subscriptions):
            if subscription is not skip:
                subscription.notify()
                woken += 1
        return woken

    def read_recent(self, after: int, limit: int) -> list[DeliveredOperation] | None:
        """``ServerStore.operations_after_delivery`` from memory, or ``None`` to read the store.

        Answers only when the window reaches every commit published so far, so a short
        answer means "that is the end of the log" as it does from the store.
        """
        recent = self.recent
        if recent.end < self.max_delivery_sequence:
            return None
        return recent.read(after, limit)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def pending_wakeups(self) -> int:
        return sum(s.pending() for s in self._subscriptions)

    async def follow_store(
        self,
        wait_for_commits: Callable[[int], Awaitable[int]],
        *,
        retry_delay: float = 1.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Publish commits that the store reports (other processes' included), forever.

        Args:
            wait_for_commits: Called with the last delivery sequence seen; returns once the
                store's maximum delivery sequence is above it, with the new maximum.
            retry_delay: Pause after a failed wait (for example a dropped database
                connection) before trying again.
        """
        task_status.started()
        seen = self.max_delivery_sequence
        while True:
            try:
                latest = await wait_for_commits(seen)
            except Exception as exc:  # a store hiccup must not stop live delivery for good
                log.warning(
                    "waiting for store commits failed; retrying",
                    extra=fields(error=repr(exc), retry_in=retry_delay),
                )
                await trio.sleep(retry_delay)
                continue
            if latest > seen:
                seen = latest
                self.publish(latest)
            else:
                # A wake-up without news; yield so a misbehaving store cannot spin us.
                await trio.lowlevel.checkpoint()


async def never_commits(after: int) -> int:
    """A ``wait_for_commits`` for stores that only this process writes: wait forever."""
    await trio.sleep(math.inf)
    return after  # pragma: no cover
