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

Nothing here spawns a task: an offline app needs no nursery; with sync options,
:func:`_attach_sync` runs the engine of ``kora.sync`` for as long as the app is open.
Publishing an event or bumping the feed never blocks and never awaits, so a slow consumer
can never hold up a writer.
"""

from __future__ import annotations

import enum
import fnmatch
import inspect
import logging
import math
import os
import types
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Final, cast

import attrs
import trio

from kora.core.atomic import is_json_number
from kora.core.errors import ClosedError, LocalError, ValidationError
from kora.core.ids import uuid7
from kora.core.json_types import JsonValue
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType
from kora.core.schema import Collection as SchemaCollection
from kora.core.schema import Schema
from kora.store import (
    ChangeSet,
    LocalMutation,
    Order,
    Record,
    RecordNotFoundError,
    RejectedOperation,
    Store,
    StoreStatistics,
    Where,
    open_store,
)
from kora.sync import SyncEngine, SyncOptions, open_sync

logger: Final = logging.getLogger("kora.app")

# ------------------------------------------------------------------------------------ errors


class QueryError(ValidationError):
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


#: The subscriptions and the callbacks that receive one event name.
_Route = tuple[tuple[EventSubscription, ...], tuple[EventCallback, ...]]
#: Event names whose routes an event bus remembers at most.
_MAX_ROUTES: Final = 256


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
        #: Event name -> the subscriptions and callbacks whose pattern matches it, in order;
        #: emptied whenever either list changes.  Matching every pattern on every event cost
        #: about a microsecond per event, and a transaction emits one event per operation.
        self._routes: dict[str, _Route] = {}
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
        self._routes.clear()

        def unregister() -> None:
            self.off(pattern, callback)

        return unregister

    def off(self, pattern: str, callback: EventCallback) -> None:
        """Unregister a callback registered with the same ``pattern``; no-op if there is none."""
        for index, (registered_pattern, registered) in enumerate(self._callbacks):
            if registered_pattern == pattern and registered == callback:
                del self._callbacks[index]
                self._routes.clear()
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
        # The route is a snapshot: a callback may call on()/off() while we iterate.
        subscriptions, callbacks = self._routes.get(name) or self._route(name)
        for subscription in subscriptions:
            subscription._deliver(event)
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                self._callback_errors += 1
                logger.exception("event callback %r for %r failed", callback, name)
        return event

    def _emit_each(self, name: str, key: str, values: Sequence[object]) -> None:
        """``emit(name, {key: value})`` for each of ``values``, in order.

        When nothing listens to ``name`` the events are only counted: a transaction of
        1,000 operations publishes 1,000 ``operation:created`` events.
        """
        subscriptions, callbacks = self._routes.get(name) or self._route(name)
        if subscriptions or callbacks:
            for value in values:
                self.emit(name, {key: value})
        else:
            self._published += len(values)

    def _route(self, name: str) -> _Route:
        """Who receives events called ``name`` (remembered until a listener comes or goes)."""
        if len(self._routes) >= _MAX_ROUTES:  # apps may emit events of any name
            self._routes.clear()
        route = self._routes[name] = (
            tuple(s for s in self._subscriptions if fnmatch.fnmatchcase(name, s.pattern)),
            tuple(c for pattern, c in self._callbacks if fnmatch.fnmatchcase(name, pattern)),
        )
        return route

    def close(self) -> None:
        """End every subscription (after its buffer is read) and refuse new ones."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription._close()
        self._subscriptions.clear()
        self._routes.clear()

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
        self._routes.clear()

    def _remove(self, subscription: EventSubscription) -> None:
        subscription._close()
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            self._routes.clear()


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


# ------------------------------------------------------------------------------------ queries

#: The comparison operators of ``where((field, op, value))``.
OPERATORS: Final = ("==", "!=", "<", "<=", ">", ">=", "in")

#: The pseudo-field that names the record id in queries.
ID_FIELD: Final = "id"


def _check_window(name: str, value: object) -> int:
    if type(value) is not int or value < 0:
        raise QueryError(f"{name} must be a non-negative int, got {value!r}")
    return value


@attrs.frozen
class Query:
    """An immutable query over one collection; every builder method returns a new query.

    Build one from a collection: ``app.todos.where(done=False).order_by("-priority").limit(10)``.
    Nothing runs until ``all()``, ``first()``, ``count()`` or ``watch()``; the store runs the
    query in SQL (``MemoryStore`` imitates SQLite's semantics exactly).

    Attributes:
        collection: The collection the query reads.
        conditions: ``(field, operator, value)`` conditions, all of which must hold.
        ordering: ``(field, descending)`` keys; ties are always broken by record id.
        max_rows: The limit, or None.
        skip: The offset.
    """

    # Collections are cached per app, so identity is the right equality here.
    collection: Collection = attrs.field(repr=lambda c: repr(c.name))
    conditions: tuple[Where, ...] = ()
    ordering: tuple[Order, ...] = ()
    max_rows: int | None = None
    skip: int = 0

    def where(self, *conditions: tuple[str, str, object], **equals: object) -> Query:
        """Narrow the query; all conditions (of every ``where`` call) must hold.

        Args:
            *conditions: ``(field, operator, value)`` tuples; operators are ``==``, ``!=``,
                ``<``, ``<=``, ``>``, ``>=`` and ``in`` (with a list of values).  A missing
                field compares as null: ``("due", "==", None)`` finds records without
                ``due``; ordering operators and ``in`` never match it.
            **equals: ``field=value`` shorthand for ``(field, "==", value)``.

        Raises:
            QueryError: Unknown field or operator, a malformed condition, or ``in`` without
                a list.
        """
        added: list[Where] = []
        for condition in conditions:
            if not isinstance(condition, tuple | list) or len(condition) != 3:
                raise QueryError(
                    f"a condition is a (field, operator, value) tuple, got {condition!r}"
                )
            field, op, value = condition
            added.append(self._condition(field, op, value))
        added.extend(self._condition(field, "==", value) for field, value in equals.items())
        return attrs.evolve(self, conditions=self.conditions + tuple(added))

    def order_by(self, *fields: str) -> Query:
        """Sort by ``fields`` in turn; ``"-field"`` sorts descending.

        Null (missing) values sort first ascending and last descending; numbers sort before
        text.  Repeated calls add further keys.

        Raises:
            QueryError: Unknown field.
        """
        keys: list[Order] = []
        for spec in fields:
            if not isinstance(spec, str) or spec in ("", "-"):
                raise QueryError(
                    f"order_by takes field names such as 'title' or '-title': {spec!r}"
                )
            descending = spec.startswith("-")
            keys.append((self._field(spec[1:] if descending else spec), descending))
        return attrs.evolve(self, ordering=self.ordering + tuple(keys))

    def limit(self, n: int) -> Query:
        """Return at most ``n`` records (``n >= 0``)."""
        return attrs.evolve(self, max_rows=_check_window("limit", n))

    def offset(self, n: int) -> Query:
        """Skip the first ``n`` matching records (``n >= 0``)."""
        return attrs.evolve(self, skip=_check_window("offset", n))

    async def all(self) -> list[Record]:
        """The matching records, in order."""
        return await self.collection._run(self)

    async def first(self) -> Record | None:
        """The first matching record, or None."""
        if self.max_rows == 0:
            await trio.lowlevel.checkpoint()
            return None
        rows = await attrs.evolve(self, max_rows=1).all()
        return rows[0] if rows else None

    async def count(self) -> int:
        """How many records ``all()`` would return (counted by the store, in SQL)."""
        total = await self.collection._count(self)
        remaining = max(0, total - self.skip)
        return remaining if self.max_rows is None else min(remaining, self.max_rows)

    def watch(self) -> WatchContext:
        """Watch the query's results, as an async context manager of an async iterator.

        ``async with query.watch() as results: async for records in results: ...``.  The
        first iteration gives the current results at once; each later one waits until the
        collection changed *and* the results differ from the last ones given.  A slow
        consumer skips intermediate states and always gets the newest (latest wins, see
        :class:`Watch`).
        """
        return WatchContext(self)

    def _field(self, field: object) -> str:
        if field == ID_FIELD:
            return ID_FIELD
        known = self.collection.definition.fields
        if not isinstance(field, str) or field not in known:
            available = ", ".join([ID_FIELD, *known])
            raise QueryError(
                f'Unknown field {field!r} in a query on collection "{self.collection.name}". '
                f"Available fields: {available}"
            )
        return field

    def _condition(self, field: object, op: object, value: object) -> Where:
        name = self._field(field)
        if op not in OPERATORS:
            raise QueryError(f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}")
        if op == "in":
            if not isinstance(value, list | tuple):
                raise QueryError(f"'in' needs a list of values, got {value!r}")
            value = list(value)
        return (name, op, value)  # type: ignore[return-value]


# -------------------------------------------------------------------------------------- watch


@attrs.frozen
class WatchStatistics:
    """A snapshot of one watch.

    Attributes:
        queries_run: How many times the query ran (once initially, then once per wake-up).
        results_given: How many result lists the iterator returned.
    """

    queries_run: int
    results_given: int


class Watch:
    """The results of one query, given initially and then whenever they change.

    Semantics, exactly:

    * The first ``__anext__`` runs the query and returns its results.
    * Each later ``__anext__`` waits until a write that touched the collection has been
      committed since the last run, re-runs the query and returns the new results if they
      differ from the last ones returned (records compare by value, including their
      versions); otherwise it goes back to waiting.
    * The buffer is one "dirty" mark, latest wins: writes made while the consumer is busy
      elsewhere do not queue up.  However many there were, the next ``__anext__`` runs the
      query once and returns the newest state; intermediate states are skipped.  A write is
      never missed: the change counter is read *before* each query runs.
    * Iteration ends when the app closes.  Using the watch after its ``async with`` block
      raises ``ClosedError``.

    Writers never wait for watchers.  Created by ``Query.watch()``.
    """

    def __init__(self, query: Query) -> None:
        self._query = query
        self._app = query.collection.app
        self._generation: int | None = None
        self._last: list[Record] | None = None
        self._closed = False
        self._busy = False
        self._queries_run = 0
        self._results_given = 0

    @property
    def query(self) -> Query:
        return self._query

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> list[Record]:
        if self._closed:
            raise ClosedError("this watch was used after its `async with` block ended")
        if self._busy:
            raise trio.BusyResourceError("another task is already iterating this watch")
        self._busy = True
        try:
            return await self._next()
        finally:
            self._busy = False

    async def _next(self) -> list[Record]:
        feed = self._app._feed
        name = self._query.collection.name
        while True:
            if self._generation is not None and not await feed.wait_past(name, self._generation):
                raise StopAsyncIteration
            generation = feed.generation(name)
            try:
                results = await self._query.all()
            except ClosedError:
                if self._app.closed:
                    raise StopAsyncIteration from None
                raise
            self._queries_run += 1
            self._generation = generation
            if results != self._last:
                self._last = results
                self._results_given += 1
                return results

    def statistics(self) -> WatchStatistics:
        """Counters that show how many intermediate states were skipped."""
        return WatchStatistics(queries_run=self._queries_run, results_given=self._results_given)

    def _close(self) -> None:
        self._closed = True


class WatchContext:
    """``async with query.watch() as results``: the block bounds the watch's lifetime."""

    def __init__(self, query: Query) -> None:
        self._watch = Watch(query)

    async def __aenter__(self) -> Watch:
        await trio.lowlevel.checkpoint()
        self._watch._app._check_open()
        self._watch._app._watches += 1
        return self._watch

    async def __aexit__(self, *exc_info: object) -> None:
        self._watch._close()
        self._watch._app._watches -= 1


# --------------------------------------------------------------------------------- mutations


def _number_or_error(collection: str, field: str, value: object, what: str) -> int | float:
    if not is_json_number(value) or not math.isfinite(value):  # type: ignore[arg-type]
        raise ValidationError(
            f'atomic {what} of field "{field}" in collection "{collection}" needs a finite '
            f"number, got {value!r}"
        )
    return value  # type: ignore[return-value]


class _MutationBuilder:
    """Validated ``LocalMutation`` values for one collection (shared by direct and staged writes)."""

    def __init__(self, schema: Schema, name: str) -> None:
        self._schema = schema
        self._name = name
        schema.collection(name)  # raises SchemaValidationError for an unknown name

    def insert(self, data: Mapping[str, object]) -> LocalMutation:
        values = self._schema.validate_insert(self._name, data)
        return LocalMutation.insert(self._name, values, record_id=uuid7())

    def update(self, record_id: str, changes: Mapping[str, object]) -> LocalMutation:
        _check_record_id(record_id)
        validated = self._schema.validate_update(self._name, changes)
        for value in validated.values():
            if isinstance(value, AtomicOp):
                break
        else:  # no atomic op, the usual update: the validated dict (a new one) is the data
            data = cast("dict[str, JsonValue]", validated)
            return LocalMutation(OpType.UPDATE, self._name, record_id, data)
        plain: dict[str, JsonValue] = {}
        atomic: dict[str, AtomicOp] = {}
        for field, value in validated.items():
            if isinstance(value, AtomicOp):
                atomic[field] = value
            else:
                plain[field] = value
        return LocalMutation.update(self._name, record_id, plain, atomic=atomic or None)

    def delete(self, record_id: str) -> LocalMutation:
        _check_record_id(record_id)
        return LocalMutation.delete(self._name, record_id)

    def atomic(
        self, record_id: str, field: str, kind: AtomicOpType, value: object
    ) -> LocalMutation:
        if kind is AtomicOpType.INCREMENT:
            value = _number_or_error(self._name, field, value, "increment/decrement")
        return self.update(record_id, {field: AtomicOp(kind, value)})  # type: ignore[arg-type]


def _check_record_id(record_id: object) -> None:
    if not isinstance(record_id, str) or not record_id:
        raise ValidationError(f"a record id is a non-empty string, got {record_id!r}")


# ------------------------------------------------------------------------------- collections


class Collection:
    """One collection of an open app: writes, reads, queries and watches.

    Get it as ``app.todos`` or ``app.collection("todos")``.  Every write is one store
    transaction that creates one operation (``operation:created`` is emitted after it
    committed) and returns the record as stored afterwards.
    """

    def __init__(self, app: App, name: str) -> None:
        self._app = app
        self._name = name
        self._build = _MutationBuilder(app.schema, name)

    def __repr__(self) -> str:
        return f"<Collection {self._name!r}>"

    @property
    def name(self) -> str:
        return self._name

    @property
    def app(self) -> App:
        return self._app

    @property
    def definition(self) -> SchemaCollection:
        """The collection's schema (its fields)."""
        return self._app.schema.collection(self._name)

    # ----------------------------------------------------------------- writes

    async def insert(self, data: Mapping[str, object]) -> Record:
        """Insert a new record with a fresh UUIDv7 id.

        Args:
            data: Field values; the schema checks and converts them and fills defaults.

        Returns:
            The stored record.

        Raises:
            SchemaValidationError: ``data`` does not fit the schema (unknown field, missing
                required field, wrong kind of value).
            ClosedError: The app is closed.
        """
        self._app._check_open()
        mutation = self._build.insert(data)
        assert mutation.record_id is not None  # the builder always sets it
        return await self._app._commit_one(mutation, self._name, mutation.record_id)

    async def update(self, record_id: str, changes: Mapping[str, object]) -> Record:
        """Set some fields of a record (per-field last-writer-wins).

        Args:
            record_id: The record.
            changes: The fields to set (at least one); ``AtomicOp`` values are allowed.

        Returns:
            The record after the update.

        Raises:
            RecordNotFoundError: No such record, or it is deleted.
            SchemaValidationError: ``changes`` do not fit the schema.
            ValidationError: ``changes`` is empty.
            ClosedError: The app is closed.
        """
        self._app._check_open()
        mutation = self._build.update(record_id, changes)
        return await self._app._commit_one(mutation, self._name, record_id)

    async def delete(self, record_id: str) -> None:
        """Delete a record (a tombstone; a later write from another node may revive it).

        Raises:
            RecordNotFoundError: No such record, or it is already deleted.
            ClosedError: The app is closed.
        """
        self._app._check_open()
        await self._app._commit([self._build.delete(record_id)])

    async def increment(self, record_id: str, field: str, by: int | float = 1) -> Record:
        """Add ``by`` to a number field, merging with concurrent increments (spec 3.7).

        A missing or non-number value counts as 0.  Raises as :meth:`update`.
        """
        return await self._atomic(record_id, field, AtomicOpType.INCREMENT, by)

    async def decrement(self, record_id: str, field: str, by: int | float = 1) -> Record:
        """Subtract ``by`` from a number field (an increment by ``-by``)."""
        amount = _number_or_error(self._name, field, by, "decrement")
        return await self._atomic(record_id, field, AtomicOpType.INCREMENT, -amount)

    async def max(self, record_id: str, field: str, value: int | float) -> Record:
        """Raise a number (or timestamp) field to ``value`` if it is lower."""
        return await self._atomic(record_id, field, AtomicOpType.MAX, value)

    async def min(self, record_id: str, field: str, value: int | float) -> Record:
        """Lower a number (or timestamp) field to ``value`` if it is higher."""
        return await self._atomic(record_id, field, AtomicOpType.MIN, value)

    async def append(self, record_id: str, field: str, value: object) -> Record:
        """Append ``value`` to an array field (a missing value counts as ``[]``)."""
        return await self._atomic(record_id, field, AtomicOpType.APPEND, value)

    async def remove(self, record_id: str, field: str, value: object) -> Record:
        """Remove every element equal to ``value`` (as JSON) from an array field."""
        return await self._atomic(record_id, field, AtomicOpType.REMOVE, value)

    async def _atomic(
        self, record_id: str, field: str, kind: AtomicOpType, value: object
    ) -> Record:
        self._app._check_open()
        mutation = self._build.atomic(record_id, field, kind, value)
        return await self._app._commit_one(mutation, self._name, record_id)

    # ------------------------------------------------------------------ reads

    async def get(self, record_id: str) -> Record | None:
        """The record with this id, or None if there is none or it is deleted."""
        self._app._check_open()
        return await self._app._store.get(self._name, record_id)

    def query(self) -> Query:
        """A query over every record of the collection."""
        return Query(self)

    def where(self, *conditions: tuple[str, str, object], **equals: object) -> Query:
        """Shorthand for ``query().where(...)``."""
        return self.query().where(*conditions, **equals)

    def order_by(self, *fields: str) -> Query:
        """Shorthand for ``query().order_by(...)``."""
        return self.query().order_by(*fields)

    def limit(self, n: int) -> Query:
        """Shorthand for ``query().limit(n)``."""
        return self.query().limit(n)

    def offset(self, n: int) -> Query:
        """Shorthand for ``query().offset(n)``."""
        return self.query().offset(n)

    async def all(self) -> list[Record]:
        """Every record of the collection, ordered by id (creation order for local inserts)."""
        return await self.query().all()

    async def first(self) -> Record | None:
        """The record with the smallest id, or None."""
        return await self.query().first()

    async def count(self) -> int:
        """How many records the collection has."""
        return await self.query().count()

    def watch(self) -> WatchContext:
        """Watch every record of the collection (see :meth:`Query.watch`)."""
        return self.query().watch()

    async def _run(self, query: Query) -> list[Record]:
        self._app._check_open()
        return await self._app._store.query(
            self._name, query.conditions, query.ordering, limit=query.max_rows, offset=query.skip
        )

    async def _count(self, query: Query) -> int:
        self._app._check_open()
        return await self._app._store.count(self._name, query.conditions)


# ------------------------------------------------------------------------------ transactions

#: A staged write that finds its record's existence in memory yields to other tasks once per
#: this many staged writes (always a cancellation point; see Transaction._stage).
STAGED_PER_SCHEDULE_POINT: Final = 32


class TransactionState(enum.Enum):
    OPEN = "open"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled back"


class TransactionCollection:
    """The write side of one collection inside a transaction (``tx.todos``).

    Writes are checked at once (schema, record existence as the transaction would see it)
    and staged; the store applies them, in order, when the ``async with`` block ends.
    Because nothing is applied yet, ``insert`` returns only the new record's id and the
    other writes return None.  Reads go through the app (``app.todos.get``) and see
    committed data only.
    """

    def __init__(self, transaction: Transaction, name: str) -> None:
        self._tx = transaction
        self._name = name
        self._build = _MutationBuilder(transaction.app.schema, name)

    def __repr__(self) -> str:
        return f"<TransactionCollection {self._name!r} of transaction {self._tx.id}>"

    @property
    def name(self) -> str:
        return self._name

    async def insert(self, data: Mapping[str, object]) -> str:
        """Stage an insert; returns the id the record will have."""
        mutation = self._build.insert(data)
        await self._tx._stage(mutation, exists_after=True)
        assert mutation.record_id is not None
        return mutation.record_id

    async def update(self, record_id: str, changes: Mapping[str, object]) -> None:
        """Stage an update (raises ``RecordNotFoundError`` now if the record is missing)."""
        mutation = self._build.update(record_id, changes)
        await self._tx._stage(mutation, must_exist=True, exists_after=True)

    async def delete(self, record_id: str) -> None:
        """Stage a delete (raises ``RecordNotFoundError`` now if the record is missing)."""
        mutation = self._build.delete(record_id)
        await self._tx._stage(mutation, must_exist=True, exists_after=False)

    async def increment(self, record_id: str, field: str, by: int | float = 1) -> None:
        """Stage an atomic increment."""
        await self._atomic(record_id, field, AtomicOpType.INCREMENT, by)

    async def decrement(self, record_id: str, field: str, by: int | float = 1) -> None:
        """Stage an atomic decrement (an increment by ``-by``)."""
        amount = _number_or_error(self._name, field, by, "decrement")
        await self._atomic(record_id, field, AtomicOpType.INCREMENT, -amount)

    async def max(self, record_id: str, field: str, value: int | float) -> None:
        """Stage an atomic max."""
        await self._atomic(record_id, field, AtomicOpType.MAX, value)

    async def min(self, record_id: str, field: str, value: int | float) -> None:
        """Stage an atomic min."""
        await self._atomic(record_id, field, AtomicOpType.MIN, value)

    async def append(self, record_id: str, field: str, value: object) -> None:
        """Stage an atomic append."""
        await self._atomic(record_id, field, AtomicOpType.APPEND, value)

    async def remove(self, record_id: str, field: str, value: object) -> None:
        """Stage an atomic remove."""
        await self._atomic(record_id, field, AtomicOpType.REMOVE, value)

    async def _atomic(self, record_id: str, field: str, kind: AtomicOpType, value: object) -> None:
        mutation = self._build.atomic(record_id, field, kind, value)
        await self._tx._stage(mutation, must_exist=True, exists_after=True)


class Transaction:
    """A group of writes committed together under one transaction id.

    Made by ``async with app.transaction() as tx``.  Write through ``tx.todos`` (or
    ``tx.collection("todos")``).  When the block ends without an exception, every staged
    write is applied in ONE store transaction and every operation carries ``tx.id`` as its
    transaction id and depends causally on the one before; if the block raises (or is
    cancelled), nothing is written.  If the commit itself fails (for example a record was
    deleted meanwhile), nothing is written either and the error propagates from the
    ``async with``.  Writes made through ``app.todos`` inside the block are *not* part of
    the transaction: they commit on their own, at once.

    Attributes:
        id: The transaction id (a UUIDv7).
        state: Open, committed or rolled back.
        operations: The committed operations, in order (empty until committed).
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.id = uuid7()
        self.state = TransactionState.OPEN
        self.operations: tuple[Operation, ...] = ()
        self._staged: list[LocalMutation] = []
        # (collection, id) -> whether the record exists once the staged writes apply.
        self._exists: dict[tuple[str, str], bool] = {}
        self._collections: dict[str, TransactionCollection] = {}

    def __repr__(self) -> str:
        return f"<Transaction {self.id} {self.state.value}, {len(self._staged)} staged>"

    def collection(self, name: str) -> TransactionCollection:
        """The write side of collection ``name`` in this transaction.

        Raises:
            SchemaValidationError: No such collection in the schema.
        """
        found = self._collections.get(name)
        if found is None:
            found = self._collections[name] = TransactionCollection(self, name)
        return found

    def __getattr__(self, name: str) -> TransactionCollection:
        app: App | None = self.__dict__.get("app")
        if name.startswith("_") or app is None or name not in app.schema.collections:
            raise AttributeError(_unknown_attribute("Transaction", name, app))
        return self.collection(name)

    @property
    def staged(self) -> int:
        """How many writes are staged."""
        return len(self._staged)

    async def _stage(
        self, mutation: LocalMutation, *, must_exist: bool = False, exists_after: bool
    ) -> None:
        if self.state is not TransactionState.OPEN:
            raise ClosedError(f"transaction {self.id} is already {self.state.value}")
        self.app._check_open()
        assert mutation.record_id is not None
        key = (mutation.collection, mutation.record_id)
        # Every staged write is a cancellation point: the store's read when the record's
        # existence is not known yet, else a checkpoint.  Staging touches memory only, and a
        # full scheduling round (several microseconds of trio's run loop and an epoll call)
        # per write was a tenth of a small write's cost: other tasks still get the loop at
        # least every STAGED_PER_SCHEDULE_POINT writes, and at the commit.  (Inline: an
        # awaited helper cost a coroutine per write.)
        exists = self._exists.get(key) if must_exist else True
        if exists is None:
            exists = await self.app._store.get(*key) is not None
        elif len(self._staged) % STAGED_PER_SCHEDULE_POINT:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            await trio.lowlevel.checkpoint()
        if not exists:
            raise RecordNotFoundError(
                f"cannot {mutation.type} {key[0]}/{key[1]}: not found "
                "(nothing of the transaction was written)"
            )
        # Staged only after every check passed (and after the last checkpoint).
        self._staged.append(mutation)
        self._exists[key] = exists_after

    async def _commit(self) -> None:
        mutations, self._staged = self._staged, []
        if not mutations:
            await trio.lowlevel.checkpoint()
        else:
            self.operations = tuple(await self.app._commit(mutations, transaction_id=self.id))
        self.state = TransactionState.COMMITTED
        self.app._transactions_committed += 1
        self.app.events.emit(
            "transaction:committed",
            {"transaction_id": self.id, "operations": self.operations},
        )

    def _rollback(self) -> None:
        self._staged = []
        self.state = TransactionState.ROLLED_BACK
        self.app._transactions_rolled_back += 1


class TransactionContext:
    """``async with app.transaction() as tx``: commit on success, discard on error."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._tx: Transaction | None = None

    async def __aenter__(self) -> Transaction:
        await trio.lowlevel.checkpoint()
        self._app._check_open()
        if self._tx is not None:
            raise LocalError("a transaction context can be entered only once")
        self._tx = Transaction(self._app)
        return self._tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        assert self._tx is not None
        if exc is not None:
            # No await on this path: the body's exception (possibly Cancelled) goes on as is.
            self._tx._rollback()
            return
        try:
            await self._tx._commit()
        except BaseException:
            if self._tx.state is TransactionState.OPEN:
                self._tx._rollback()
            raise


# ----------------------------------------------------------------------------------- the app


@attrs.frozen
class AppStatistics:
    """A snapshot of an app (cheap; no store access).

    Attributes:
        node_id: This replica's node id.
        collections: The schema's collection names.
        operations_created: Local operations committed by this app object.
        transactions_committed: Transactions committed.
        transactions_rolled_back: Transactions discarded because their block raised or the
            commit failed.
        active_watches: Watches inside their ``async with`` block.
        events: The event bus's numbers.
        store: The store's numbers (worker queue depth, change counter).
    """

    node_id: str
    collections: tuple[str, ...]
    operations_created: int
    transactions_committed: int
    transactions_rolled_back: int
    active_watches: int
    events: EventBusStatistics
    store: StoreStatistics


def _unknown_attribute(owner: str, name: str, app: App | None) -> str:
    # Reads the instance dict only: __getattr__ may run on a half-built object.
    names = () if app is None else app.__dict__.get("_collection_names", ())
    available = ", ".join(names) or "(none)"
    return (
        f"{owner} has no attribute {name!r} and the schema has no collection of that name. "
        f"Collections: {available}"
    )


class App:
    """An open Kora app: one local replica, its collections, events and (later) sync.

    Made by ``async with kora.open_app(schema, ...) as app``; usable until the block ends.

    Attributes:
        schema: The app's schema.
        events: The event bus (see :class:`EventBus`).
        sync: The sync handle, or None when the app was opened without sync options.
    """

    def __init__(self, schema: Schema, store: Store) -> None:
        self.schema = schema
        self._collection_names = tuple(schema.collections)
        self.events = EventBus()
        self.sync: SyncEngine | None = None
        self._store = store
        self._feed = ChangeFeed()
        self._closed = False
        self._collections: dict[str, Collection] = {}
        self._operations_created = 0
        self._transactions_committed = 0
        self._transactions_rolled_back = 0
        self._watches = 0
        self._remove_listener = store.add_change_listener(self._on_store_change)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<App node={self.node_id} {state} collections={list(self.schema.collections)}>"

    @property
    def node_id(self) -> str:
        """This replica's node id (a UUIDv7 kept in the store across restarts)."""
        return self._store.node_id

    @property
    def closed(self) -> bool:
        return self._closed

    def collection(self, name: str) -> Collection:
        """The collection ``name`` (also reachable as ``app.<name>``).

        Raises:
            SchemaValidationError: The schema has no such collection.
        """
        found = self._collections.get(name)
        if found is None:
            found = self._collections[name] = Collection(self, name)
        return found

    def __getattr__(self, name: str) -> Collection:
        # Only called when normal lookup fails, so App's own attributes always win; a
        # collection named like one ("events", "sync") is reachable via collection().
        if name.startswith("_") or name not in self.__dict__.get("_collection_names", ()):
            raise AttributeError(_unknown_attribute("App", name, self))
        return self.collection(name)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self.schema.collections})

    def transaction(self) -> TransactionContext:
        """Group writes under one transaction id, committed together or not at all.

        ``async with app.transaction() as tx: await tx.todos.insert({...})``.
        See :class:`Transaction`.
        """
        return TransactionContext(self)

    async def pending_operations(self) -> int:
        """How many local operations wait in the outbound queue for the server."""
        self._check_open()
        return await self._store.pending_count()

    async def rejected_operations(self) -> list[RejectedOperation]:
        """Local operations the server rejected, oldest first (their effect stays local)."""
        self._check_open()
        return await self._store.rejected_operations()

    def statistics(self) -> AppStatistics:
        """A snapshot of counters; synchronous and cheap."""
        return AppStatistics(
            node_id=self.node_id,
            collections=tuple(self.schema.collections),
            operations_created=self._operations_created,
            transactions_committed=self._transactions_committed,
            transactions_rolled_back=self._transactions_rolled_back,
            active_watches=self._watches,
            events=self.events.statistics(),
            store=self._store.statistics(),
        )

    # ----------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the app is closed (its `async with open_app()` block ended)")

    async def _commit(
        self, mutations: Sequence[LocalMutation], *, transaction_id: str | None = None
    ) -> list[Operation]:
        self._check_open()
        operations = await self._store.write_local_many(mutations, transaction_id=transaction_id)
        self._operations_created += len(operations)
        self.events._emit_each("operation:created", "operation", operations)
        return operations

    async def _commit_one(self, mutation: LocalMutation, collection: str, record_id: str) -> Record:
        """One write in its own transaction; the record as stored right after it.

        The record comes from the write's own store call (no second read), deleted or not:
        a concurrent delete that committed right after our write must still give the caller
        a record (a tombstone) rather than nothing.
        """
        self._check_open()
        operation, record = await self._store.write_local_and_get(mutation, collection, record_id)
        self._operations_created += 1
        self.events.emit("operation:created", {"operation": operation})
        return record

    def _on_store_change(self, changes: ChangeSet) -> None:
        # Runs in the writing task right after the store committed: local writes and,
        # once sync exists, merged remote operations alike.
        for collection, ids in changes.records.items():
            self._feed.bump(collection)
            self.events.emit("record:changed", {"collection": collection, "ids": ids})

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._remove_listener()
        self._feed.close()
        self.events.close()


# -------------------------------------------------------------------------------- sync seam


@asynccontextmanager
async def _attach_sync(app: App, options: SyncOptions) -> AsyncIterator[None]:
    """Run the sync engine for ``app`` while the block runs and expose it as ``app.sync``."""
    if not isinstance(options, SyncOptions):
        raise TypeError(f"sync must be kora.SyncOptions or None, got {options!r}")
    async with open_sync(app._store, options, emit=app.events.emit) as engine:
        app.sync = engine
        yield


@asynccontextmanager
async def open_app(
    schema: Schema,
    path: str | os.PathLike[str] | None = "app.db",
    *,
    sync: SyncOptions | None = None,
) -> AsyncIterator[App]:
    """Open an app on a local store, as an async context manager.

    ``async with kora.open_app(schema, path="app.db") as app: ...``.  Entering opens (and
    creates or migrates) the store in a worker thread, so it is a checkpoint; leaving closes
    the store even when the block is cancelled.  After the block, every method raises
    ``ClosedError``, watches end and event subscriptions end once drained.

    Args:
        schema: The app's schema (``kora.define_schema``); its version is stamped on every
            operation.
        path: The SQLite database file (created if missing); ``":memory:"`` for a
            throw-away SQLite database; None for the pure-Python ``MemoryStore``.
        sync: Sync options, or None to stay offline (``app.sync`` is then None).

    Raises:
        TypeError: ``schema`` is not a ``Schema``.
        StoreVersionError: The database file was written by a newer Kora.
    """
    if not isinstance(schema, Schema):
        raise TypeError(f"open_app needs a Schema from kora.define_schema(), got {schema!r}")
    async with open_store(path, schema_version=schema.version) as store:
        app = App(schema, store)
        try:
            if sync is None:
                yield app
            else:
                async with _attach_sync(app, sync):
                    yield app
        finally:
            app._close()


__all__ = [
    "DEFAULT_EVENT_BUFFER",
    "ID_FIELD",
    "OPERATORS",
    "App",
    "AppStatistics",
    "ChangeFeed",
    "Collection",
    "Event",
    "EventBus",
    "EventBusStatistics",
    "EventSubscription",
    "Lagged",
    "Overflow",
    "Query",
    "QueryError",
    "Record",
    "RecordNotFoundError",
    "SubscriptionStatistics",
    "Transaction",
    "TransactionCollection",
    "TransactionContext",
    "TransactionState",
    "Watch",
    "WatchContext",
    "WatchStatistics",
    "open_app",
]
