"""Fan-out of "something new was committed" to the live sessions.

The hub carries wake-ups, never operations.  Each session holds a ``Subscription`` whose
queue has room for exactly one pending wake-up; further notifications while one is pending
are coalesced into it (they carry no data a woken session needs: it re-reads the store from
its own delivery position).  So a slow or stuck session costs one slot of memory, a fast
publisher never blocks, and nothing is lost: whatever a session has not yet sent is still in
the store, ordered by delivery sequence.

Commits made by this process are published by the session that made them; commits made by
other processes sharing the store (PostgreSQL) arrive through ``follow_store``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import trio

from kora.server.logs import fields, get_logger

__all__ = ["Hub", "Subscription"]

log = get_logger(__name__)


class Subscription:
    """One session's wake-up queue (capacity one, coalescing)."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[None](1)
        self.notified = 0
        self.coalesced = 0

    def notify(self) -> None:
        """Wake the session up; never blocks."""
        self.notified += 1
        try:
            self._send.send_nowait(None)
        except trio.WouldBlock:
            # A wake-up is already pending and will make the session re-read the store.
            self.coalesced += 1
        except trio.ClosedResourceError:
            pass

    async def wait(self) -> None:
        """Wait until something was committed since the previous ``wait`` returned."""
        await self._receive.receive()

    def pending(self) -> int:
        return self._receive.statistics().current_buffer_used

    def close(self) -> None:
        self._send.close()
        self._receive.close()


class Hub:
    """Wake-up fan-out to every subscribed session."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self.max_delivery_sequence = 0

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A subscription for the duration of the ``with`` block."""
        subscription = Subscription()
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            subscription.close()

    def publish(self, max_delivery_sequence: int = 0) -> None:
        """Tell every subscriber that operations up to this sequence may be new."""
        self.max_delivery_sequence = max(self.max_delivery_sequence, max_delivery_sequence)
        for subscription in list(self._subscriptions):
            subscription.notify()

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
