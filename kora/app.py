"""The App facade: ``open_app()`` with collections, queries, watch, events and sync.

Theory of operation
-------------------

``open_app(schema, path=...)`` opens a local store (``SQLiteStore`` on a file, or
``MemoryStore`` when ``path`` is None) and wraps it in an :class:`App`.  Everything here is a
thin, typed layer over the store: every write is *one* store transaction that returns the
committed operation, every query is executed by the store in SQL, and this module only adds

* schema validation and record ids before a write reaches the store;
* the :class:`EventBus` (``app.events``) that announces committed writes;
* the :class:`ChangeFeed` behind ``watch()``: one generation counter per collection, bumped
  after every committed change.  A watcher remembers the generation its last result was
  computed at and re-runs its query only when the counter moved past it.  That is a buffer of
  one with latest-wins semantics by construction: however many changes happen while a watcher
  is busy, it runs its query once more and sees the newest state;
* transactions that stage writes in memory and hand them to the store as one batch.

Nothing here spawns a task: the app needs no nursery until sync is attached (a later issue;
the seam is :func:`_attach_sync`).  Publishing an event or bumping the feed never blocks and
never awaits, so a slow consumer can never hold up a writer.
"""

from __future__ import annotations

import enum
import fnmatch
import inspect
import logging
import math
import types
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Final

import attrs
import trio

from kora.core.errors import ClosedError, LocalError

logger: Final = logging.getLogger("kora.app")

# ------------------------------------------------------------------------------------ errors


class RecordNotFoundError(LocalError, LookupError):
    """An update, delete or atomic write named a record id that does not exist (or is deleted).

    Attributes:
        collection: The collection that was written to.
        record_id: The id that was not found.
    """

    def __init__(self, collection: str, record_id: str) -> None:
        super().__init__(f"no record {record_id!r} in collection {collection!r}")
        self.collection = collection
        self.record_id = record_id


class QueryError(LocalError, ValueError):
    """A query names an unknown field, an unknown operator or an invalid limit or offset."""


class Lagged(LocalError):  # a control-flow signal, so no "Error" suffix (like EndOfChannel)
    """An event subscriber fell behind and events were dropped before it could read them.

    Raised once by the subscription's ``receive()`` (and so ends an ``async for``); the
    subscription stays usable and continues with the oldest event still buffered.

    Attributes:
        missed: How many events were dropped since the last ``Lagged``.
    """

    def __init__(self, missed: int) -> None:
        super().__init__(f"event subscriber lagged behind; {missed} event(s) were dropped")
        self.missed = missed


# ------------------------------------------------------------------------------------ events


def _frozen_payload(payload: Mapping[str, object]) -> Mapping[str, object]:
    return types.MappingProxyType(dict(payload))


@attrs.frozen(eq=True, hash=False)
class Event:
    """Something that happened in the app, as delivered by :class:`EventBus`.

    Attributes:
        name: Namespaced event name such as ``"operation:created"`` or ``"sync:connected"``.
        payload: Read-only mapping of event details; the keys depend on the name.
    """

    name: str
    payload: Mapping[str, object] = attrs.field(factory=dict, converter=_frozen_payload)


class Overflow(enum.Enum):
    """What an event subscription does when its buffer is full and another event arrives.

    The publisher never waits for a subscriber, so a full buffer must lose something:

    * ``LAGGED``: the oldest buffered event is dropped, and the subscriber's next
      ``receive()`` raises :class:`Lagged` with the number of dropped events before it
      continues with what is still buffered.  The gap is never silent.
    * ``DROP_OLDEST``: the oldest buffered event is dropped silently (counted in
      ``statistics().dropped``).  For consumers that only care about recent events.
    """

    LAGGED = "lagged"
    DROP_OLDEST = "drop-oldest"


@attrs.frozen
class SubscriptionStatistics:
    """A snapshot of one event subscription.

    Attributes:
        pattern: The glob pattern the subscription matches.
        buffered: Events waiting to be read.
        max_buffer: The buffer's capacity.
        dropped: Events dropped because the buffer was full, over the subscription's life.
    """

    pattern: str
    buffered: int
    max_buffer: int
    dropped: int


#: Default capacity of one subscription's buffer.
DEFAULT_EVENT_BUFFER: Final = 256


class EventSubscription:
    """The receiving end of ``app.events.subscribe(pattern)``: an async iterator of events.

    Created only by :meth:`EventBus.subscribe`.  Iteration ends once the bus is closed (when
    the app closes) and every buffered event has been read.
    """

    def __init__(self, pattern: str, max_buffer: int, overflow: Overflow) -> None:
        self.pattern = pattern
        self._max_buffer = max_buffer
        self._overflow = overflow
        self._buffer: deque[Event] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._missed = 0  # dropped since the last Lagged (LAGGED policy only)
        self._dropped = 0
        self._closed = False

    def _deliver(self, event: Event) -> None:
        # Called synchronously by the publisher: must never block or raise.
        if len(self._buffer) >= self._max_buffer:
            self._buffer.popleft()
            self._dropped += 1
            if self._overflow is Overflow.LAGGED:
                self._missed += 1
        self._buffer.append(event)
        self._lot.unpark_all()

    def _close(self) -> None:
        self._closed = True
        self._lot.unpark_all()

    async def receive(self) -> Event:
        """The next event, waiting for one if none is buffered.

        Always a checkpoint.

        Raises:
            Lagged: Events were dropped since the last call (``Overflow.LAGGED`` only);
                the next call continues with the oldest buffered event.
            trio.EndOfChannel: The bus is closed and the buffer is empty.
        """
        await trio.lowlevel.checkpoint()
        while True:
            if self._missed:
                missed, self._missed = self._missed, 0
                raise Lagged(missed)
            if self._buffer:
                return self._buffer.popleft()
            if self._closed:
                raise trio.EndOfChannel
            await self._lot.park()

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def statistics(self) -> SubscriptionStatistics:
        """A snapshot of this subscription's buffer."""
        return SubscriptionStatistics(
            pattern=self.pattern,
            buffered=len(self._buffer),
            max_buffer=self._max_buffer,
            dropped=self._dropped,
        )


EventCallback = Callable[[Event], object]


@attrs.frozen
class EventBusStatistics:
    """A snapshot of the event bus.

    Attributes:
        callbacks: Registered ``on()`` callbacks.
        subscriptions: Open ``subscribe()`` subscriptions.
        published: Events published since the bus was created.
        callback_errors: Exceptions raised by callbacks (logged and otherwise ignored).
    """

    callbacks: int
    subscriptions: int
    published: int
    callback_errors: int


class EventBus:
    """Publish/subscribe of :class:`Event` values inside one app.

    Patterns are shell-style globs matched against the whole event name (``"sync:*"``,
    ``"record:changed"``, ``"*"``).  Two ways to listen:

    * ``on(pattern, callback)``: a plain (non-async) function called synchronously, in the
      publishing task, right after the change is committed.  It must be quick.  An exception
      it raises is logged on the ``kora.app`` logger and does not reach the writer (whose
      write is already committed) or the other listeners.
    * ``async with bus.subscribe(pattern) as events: async for event in events``: a bounded
      per-subscriber buffer with an explicit :class:`Overflow` policy.

    Publishing never blocks and never awaits.
    """

    def __init__(self) -> None:
        self._callbacks: list[tuple[str, EventCallback]] = []
        self._subscriptions: list[EventSubscription] = []
        self._published = 0
        self._callback_errors = 0
        self._closed = False

    def on(self, pattern: str, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every event whose name matches ``pattern``.

        Args:
            pattern: Glob pattern over event names.
            callback: A synchronous function; async functions are refused because the
                publisher never awaits (use :meth:`subscribe` for async consumers).

        Returns:
            A function that unregisters this callback (same as ``off(pattern, callback)``).

        Raises:
            TypeError: ``callback`` is an async function.
        """
        if inspect.iscoroutinefunction(callback):
            raise TypeError(
                "event callbacks are called synchronously; use `async with "
                "app.events.subscribe(pattern)` to consume events in a task"
            )
        entry = (pattern, callback)
        self._callbacks.append(entry)

        def unregister() -> None:
            self.off(pattern, callback)

        return unregister

    def off(self, pattern: str, callback: EventCallback) -> None:
        """Unregister a callback registered with the same ``pattern``; no-op if there is none."""
        for index, (registered_pattern, registered) in enumerate(self._callbacks):
            if registered_pattern == pattern and registered == callback:
                del self._callbacks[index]
                return

    def subscribe(
        self,
        pattern: str = "*",
        *,
        max_buffer: int = DEFAULT_EVENT_BUFFER,
        overflow: Overflow = Overflow.LAGGED,
    ) -> _SubscriptionContext:
        """Subscribe to events matching ``pattern``, as an async context manager.

        ``async with bus.subscribe("sync:*") as events: async for event in events: ...``.
        Events published after entering the block are buffered (up to ``max_buffer``) until
        read; leaving the block unsubscribes.

        Args:
            pattern: Glob pattern over event names.
            max_buffer: Capacity of this subscriber's buffer (at least 1).
            overflow: What to do when the buffer is full (see :class:`Overflow`).

        Raises:
            ValueError: ``max_buffer`` is smaller than 1 or not finite.
            ClosedError: The bus (the app) is closed (raised on entering the block).
        """
        if not (isinstance(max_buffer, int) and max_buffer >= 1) or math.isinf(max_buffer):
            raise ValueError(f"max_buffer must be a positive integer, got {max_buffer!r}")
        return _SubscriptionContext(self, pattern, max_buffer, overflow)

    def emit(self, name: str, payload: Mapping[str, object] | None = None) -> Event:
        """Publish an event now; never blocks.

        Apps may publish their own events; names with the prefixes ``operation:``,
        ``record:``, ``transaction:`` and ``sync:`` belong to Kora.

        Returns:
            The published event.
        """
        event = Event(name, {} if payload is None else payload)
        self._published += 1
        for subscription in self._subscriptions:
            if fnmatch.fnmatchcase(name, subscription.pattern):
                subscription._deliver(event)
        # A copy: a callback may call on()/off() while we iterate.
        for pattern, callback in list(self._callbacks):
            if fnmatch.fnmatchcase(name, pattern):
                try:
                    callback(event)
                except Exception:
                    self._callback_errors += 1
                    logger.exception("event callback %r for %r failed", callback, name)
        return event

    def close(self) -> None:
        """End every subscription (after its buffer is read) and refuse new ones."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription._close()
        self._subscriptions.clear()

    def statistics(self) -> EventBusStatistics:
        """A snapshot of listeners and counters."""
        return EventBusStatistics(
            callbacks=len(self._callbacks),
            subscriptions=len(self._subscriptions),
            published=self._published,
            callback_errors=self._callback_errors,
        )

    def _add(self, subscription: EventSubscription) -> None:
        if self._closed:
            raise ClosedError("the event bus is closed (the app was closed)")
        self._subscriptions.append(subscription)

    def _remove(self, subscription: EventSubscription) -> None:
        subscription._close()
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)


class _SubscriptionContext:
    """``async with`` wrapper around one subscription; the block bounds its lifetime."""

    def __init__(self, bus: EventBus, pattern: str, max_buffer: int, overflow: Overflow) -> None:
        self._bus = bus
        self._subscription = EventSubscription(pattern, max_buffer, overflow)

    async def __aenter__(self) -> EventSubscription:
        await trio.lowlevel.checkpoint()
        self._bus._add(self._subscription)
        return self._subscription

    async def __aexit__(self, *exc_info: object) -> None:
        # No checkpoint here: leaving must not raise Cancelled over the body's exception.
        self._bus._remove(self._subscription)


# ------------------------------------------------------------------------------ change feed


class ChangeFeed:
    """One monotonically increasing generation counter per collection.

    ``bump(collection)`` is called after every committed change; ``wait_past(collection,
    generation)`` returns once the counter is beyond ``generation``.  Consumers that compare
    generations instead of queueing notifications cannot fall behind: a buffer of one,
    latest wins.
    """

    def __init__(self) -> None:
        self._generations: dict[str, int] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False

    def generation(self, collection: str) -> int:
        return self._generations.get(collection, 0)

    def bump(self, collection: str) -> None:
        self._generations[collection] = self.generation(collection) + 1
        self._lot.unpark_all()

    def close(self) -> None:
        self._closed = True
        self._lot.unpark_all()

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_past(self, collection: str, generation: int) -> bool:
        """Wait until ``collection`` has moved beyond ``generation``.

        Always a checkpoint.

        Returns:
            True when it moved, False when the feed was closed first.
        """
        await trio.lowlevel.checkpoint()
        while self.generation(collection) <= generation:
            if self._closed:
                return False
            await self._lot.park()
        return True


__all__ = [
    "DEFAULT_EVENT_BUFFER",
    "ChangeFeed",
    "Event",
    "EventBus",
    "EventBusStatistics",
    "EventSubscription",
    "Lagged",
    "Overflow",
    "QueryError",
    "RecordNotFoundError",
    "SubscriptionStatistics",
]

_UNUSED = AsyncIterator  # placeholder until the query section lands
