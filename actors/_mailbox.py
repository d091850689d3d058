"""Mailboxes and the per-run wiring that hands out their clones.

A :class:`Mailbox` owns the *original* two ends of one bounded trio memory channel.  Nobody
sends or receives on the originals: every user takes a clone.  Because the originals stay
open, a crashed consumer does not make its producers see ``BrokenResourceError``, and a
crashed producer does not make its consumers see ``EndOfChannel``; the restarted run takes a
fresh clone and carries on (messages already buffered stay buffered; the one a crashed
consumer held is lost).

A :class:`Wiring` belongs to one run of one child.  The supervisor creates it, passes it to
the child's ``start`` factory, and closes every clone it handed out when that run ends, so a
run that forgets to close its ends cannot keep a channel alive, and a run that closes them
itself (``with ends:``) does no harm: closing a clone never closes the original.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar, final

import trio

T = TypeVar("T")


@final
class Mailbox(Generic[T]):
    """The original ends of one bounded memory channel, kept open across restarts.

    Create it next to the supervisor (``with Mailbox[Job](16) as jobs:``) and let each child
    take clones through its :class:`Wiring`.  Closing the mailbox closes the originals: once
    every clone of one side is closed too, the other side sees the usual trio end of channel.

    Args:
        capacity: The channel's buffer size (``0`` for a rendezvous).  It must be a finite
            integer: mailboxes are bounded on purpose.

    Raises:
        ValueError: ``capacity`` is negative or not an integer (``math.inf`` included).
    """

    __slots__ = ("_capacity", "_receive", "_send")

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"a mailbox capacity is an integer >= 0, not {capacity!r}")
        self._capacity = capacity
        self._send, self._receive = trio.open_memory_channel[T](capacity)

    @property
    def capacity(self) -> int:
        """The buffer size the mailbox was created with."""
        return self._capacity

    def sender(self) -> trio.MemorySendChannel[T]:
        """Return a new send end; the caller closes it (``with mailbox.sender() as send:``).

        Raises:
            trio.ClosedResourceError: The mailbox is closed.
        """
        return self._send.clone()

    def receiver(self) -> trio.MemoryReceiveChannel[T]:
        """Return a new receive end; the caller closes it.

        Raises:
            trio.ClosedResourceError: The mailbox is closed.
        """
        return self._receive.clone()

    def statistics(self) -> trio.MemoryChannelStatistics:
        """Return trio's statistics of the channel (buffer use, open ends, waiting tasks)."""
        return self._send.statistics()

    def close(self) -> None:
        """Close the original ends (idempotent).  Clones already handed out stay open."""
        self._send.close()
        self._receive.close()

    def __enter__(self) -> Mailbox[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@final
class Wiring:
    """What one run of one child gets from its supervisor: who it is and its channel clones.

    The supervisor passes a new ``Wiring`` to ``ChildSpec.start`` for every run and calls
    :meth:`close` when the run ends.  To run an actor outside a supervisor (in a unit test,
    say), create one yourself and close it (``with Wiring("id") as wiring:``).

    Args:
        child_id: The id of the child this run belongs to.
        generation: ``0`` for the first run of the child, ``n`` for its ``n``-th restart.
    """

    __slots__ = ("_child_id", "_closers", "_generation")

    def __init__(self, child_id: str, generation: int = 0) -> None:
        self._child_id = child_id
        self._generation = generation
        self._closers: list[Callable[[], None]] = []

    @property
    def child_id(self) -> str:
        """The id of the child this run belongs to."""
        return self._child_id

    @property
    def generation(self) -> int:
        """``0`` for the first run of the child, ``n`` for its ``n``-th restart."""
        return self._generation

    def receiver(self, mailbox: Mailbox[T]) -> trio.MemoryReceiveChannel[T]:
        """Return a receive clone of ``mailbox`` that is closed when this run ends."""
        end = mailbox.receiver()
        self._closers.append(end.close)
        return end

    def sender(self, mailbox: Mailbox[T]) -> trio.MemorySendChannel[T]:
        """Return a send clone of ``mailbox`` that is closed when this run ends."""
        end = mailbox.sender()
        self._closers.append(end.close)
        return end

    def close(self) -> None:
        """Close every clone handed out by this wiring (idempotent; the originals stay open)."""
        closers, self._closers = self._closers, []
        for close in closers:
            close()

    def __enter__(self) -> Wiring:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
