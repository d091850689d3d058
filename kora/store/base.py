"""The ``Store`` interface: what the app layer and the sync engine may rely on.

A store is one node's replica: its identity (node id, HLC), its operation log, the records
materialized from it, its version vector, the durable outbound queue of local operations,
the server's rejections and the delivery watermarks of the sync protocol.

Guarantees every implementation gives (``tests/store/test_contract.py`` checks them):

* **One write, one transaction.**  ``write_local``/``write_local_many`` allocate sequence
  numbers, tick the HLC, build the content-addressed operations, append them to the log,
  merge them into the records, enqueue them and raise the version vector, all or nothing.
  ``apply_remote`` stores, merges and counts a batch in one transaction too.  When a
  durable store's call returns, the write survives a crash of the process (for
  ``SQLiteStore`` also a power loss, see docs/storage.md).  When it raises, nothing of it
  is visible.
* **Same operations, same records.**  Records are what ``kora.merge.fold`` makes of the
  operations in the log, whatever order they arrived in.
* **Dedup by id.**  An operation id is stored at most once; re-applying is a no-op.
* **Queue until acknowledged.**  A local operation stays in the outbound queue until
  ``acknowledge`` or ``reject`` removes it; nothing else does.
* **Cancellation.**  A call that is cancelled while its transaction runs either commits
  fully or not at all; the caller cannot tell which (both are safe: writes are retried by
  content id).  Reads are plain queries.

Methods are coroutine functions and must be called from trio.  The store serializes them:
one transaction at a time.  Change notification: ``add_change_listener`` callbacks receive
the ``ChangeSet`` (collection to record ids) of every committed write that touched records,
local or remote, right after its commit, in the task that wrote; the result of
``apply_remote`` carries it too, and ``change_counter`` is a cheap number to poll.
Listeners must be quick and must not raise (an exception is logged and dropped so that it
cannot make a committed write look failed).  ``add_queue_listener`` callbacks receive the
operations each local write enqueued, the same way (the sync engine's view of the queue).

Clock rebase (spec 3.8): ``rebase_pending`` re-stamps queued operations that a fast clock
stamped beyond what the server accepts, in one transaction (see ``kora.store._engine``).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterable, Sequence

import trio

from kora.core.errors import ValidationError
from kora.core.hlc import HLCTimestamp
from kora.core.operation import Operation
from kora.core.version_vector import VersionVector
from kora.store.errors import RecordNotFoundError
from kora.store.values import (
    ApplyResult,
    ChangeSet,
    LocalMutation,
    Order,
    Record,
    RejectedOperation,
    StoreStatistics,
    Where,
)

__all__ = ["MAX_WATERMARK_VIEWS", "ChangeListener", "QueueListener", "Store", "check_watermark"]

#: Delivery watermarks kept, least recently set first out (spec 4.4).
MAX_WATERMARK_VIEWS = 64

ChangeListener = Callable[[ChangeSet], None]
QueueListener = Callable[[Sequence[Operation]], None]

_log = logging.getLogger("kora.store")


def check_meta_item(key: object, value: object = None) -> None:
    """Raise ``ValidationError`` unless ``key`` is a non-empty str and ``value`` a str or None."""
    if type(key) is not str or not key:
        raise ValidationError(f"a meta key is a non-empty str, got {key!r}")
    if value is not None and type(value) is not str:
        raise ValidationError(f"a meta value is a str or None, got {type(value).__name__}")


def check_watermark(value: object) -> None:
    """Raise ``ValidationError`` unless ``value`` is a non-negative int."""
    if type(value) is not int or value < 0:
        raise ValidationError(f"a delivery watermark is a non-negative int, got {value!r}")


class Store(abc.ABC):
    """One node's local replica.  Open one with ``kora.store.open_store`` (or
    ``open_sqlite_store`` / ``open_memory_store``) as an async context manager."""

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []
        self._queue_listeners: list[QueueListener] = []
        self._change_counter = 0
        self._collection_counters: dict[str, int] = {}

    # -------------------------------------------------------------------- identity

    @property
    @abc.abstractmethod
    def node_id(self) -> str:
        """This node's id: a UUIDv7 made when the store was first created, then kept."""

    @abc.abstractmethod
    async def last_timestamp(self) -> HLCTimestamp | None:
        """The newest HLC timestamp this node has issued or merged (None before any)."""

    # ---------------------------------------------------------------------- writes

    async def write_local(self, mutation: LocalMutation) -> Operation:
        """Apply one local change in its own transaction.

        Args:
            mutation: The change (see ``LocalMutation``).

        Returns:
            The operation, as stored, queued and later sent.

        Raises:
            ValidationError: The mutation is malformed (bad data, nothing to update ...).
            RecordNotFoundError: Update or delete of a missing or deleted record.
            RecordExistsError: Insert of a record id that is live.
            StoreFailedError: The database failed; nothing was written.
            ClosedError: The store is closed.
        """
        (op,) = await self.write_local_many([mutation])
        return op

    async def write_local_and_get(
        self, mutation: LocalMutation, collection: str, record_id: str
    ) -> tuple[Operation, Record]:
        """``write_local(mutation)``, then the record ``collection``/``record_id`` as it is
        right after that commit (deleted or not).

        The app's single writes return the record they wrote; a store whose reads cost a
        thread hop (SQLite) reads it in the same worker call as the write.

        Raises:
            As ``write_local``; ``RecordNotFoundError`` if the record is not stored then.
        """
        op = await self.write_local(mutation)
        record = await self.get(collection, record_id, include_deleted=True)
        if record is None:  # pragma: no cover - the write just committed is in the log
            raise RecordNotFoundError(f"{collection}/{record_id} vanished after a write")
        return op, record

    @abc.abstractmethod
    async def write_local_many(
        self, mutations: Sequence[LocalMutation], *, transaction_id: str | None = None
    ) -> list[Operation]:
        """Apply many local changes in one transaction (all or none).

        Each mutation sees the effect of the ones before it.  With a ``transaction_id``
        (an app transaction), every operation carries it and depends causally on the
        previous one (spec 3.6); without one, each depends only on the previous local
        operation of its collection.

        Returns:
            The operations, in order.  Raises as ``write_local``.
        """

    @abc.abstractmethod
    async def apply_remote(
        self,
        operations: Iterable[Operation],
        *,
        watermark: tuple[str, int] | None = None,
        before_commit: Callable[[], object] | None = None,
    ) -> ApplyResult:
        """Store and merge operations received from other nodes, in one transaction.

        Duplicates (by id, also within the batch) are counted and skipped.  Each new
        operation is merged into its record (fast path when it is the record's newest,
        otherwise the record's log is re-folded), raises the version vector to its
        sequence number and is merged into the HLC.  An operation that cannot be accepted
        (invalid timestamp, clock drift beyond the limit, malformed content, or another
        operation already holding its node's sequence number) is left out and reported in
        ``ApplyResult.rejected``; the rest of the batch still applies.

        Args:
            operations: The received operations (any number, also none).
            watermark: ``(view, value)``: also set that view's delivery watermark, as
                ``set_delivery_watermark`` does, in the same transaction, so the batch and
                the watermark that counts it are durable together (one commit, not two).
                Not set when an operation was refused retriably (clock drift): it must be
                delivered again.
            before_commit: Called once everything is written, right before the commit, by
                a store whose commit can run while the caller's thread does other work
                (``SQLiteStore``: from its worker thread, and SQLite's commit does not hold
                the GIL).  It must be thread-safe, quick, and must not raise (that rolls the
                transaction back): e.g. ``trio.lowlevel.current_trio_token().run_sync_soon``
                of an event's ``set``.  Other stores may never call it.

        Raises:
            ValidationError: The watermark value is not a non-negative int.
            StoreFailedError: The database failed; nothing of the batch was written.
        """

    # --------------------------------------------------------------------- records

    @abc.abstractmethod
    async def get(
        self, collection: str, record_id: str, *, include_deleted: bool = False
    ) -> Record | None:
        """One record, or None if it does not exist (or is deleted, by default)."""

    @abc.abstractmethod
    async def query(
        self,
        collection: str,
        where: Sequence[Where] = (),
        order_by: Sequence[Order] = (),
        *,
        limit: int | None = None,
        offset: int = 0,
        include_deleted: bool = False,
    ) -> list[Record]:
        """Records of a collection that match every condition, in order.

        Args:
            collection: The collection.
            where: Conditions ``(field, op, value)``, op one of ``== != < <= > >= in``.
                Semantics are SQLite's (see ``kora.store._query``): ``==``/``!=`` are
                NULL-safe, ordering comparisons never match a missing field, numbers sort
                before text, booleans compare as 1/0.  ``"id"`` is the record id.
            order_by: ``(field, descending)`` keys; ties are broken by record id.
            limit: At most this many records.
            offset: Skip this many first.
            include_deleted: Include tombstones.

        Raises:
            ValidationError: Unknown operator, bad field name, non-JSON value.
        """

    @abc.abstractmethod
    async def count(
        self, collection: str, where: Sequence[Where] = (), *, include_deleted: bool = False
    ) -> int:
        """How many records ``query`` would return without limit and offset."""

    async def ensure_index(self, collection: str, fields: Sequence[str]) -> None:  # noqa: B027
        """Ask for an index on ``fields`` of ``collection`` (equality fields first).

        ``query`` already creates the index a query shape needs on first use; this lets an
        app create it up front.  Stores without indexes ignore it.
        """

    # ------------------------------------------------------------------------- log

    @abc.abstractmethod
    async def operations_in_range(
        self, node_id: str, from_sequence: int, to_sequence: int
    ) -> list[Operation]:
        """Stored operations of ``node_id`` with ``from <= sequence_number <= to``, by
        sequence number (holes are simply absent)."""

    @abc.abstractmethod
    async def operations_for_record(self, collection: str, record_id: str) -> list[Operation]:
        """Every stored operation of one record, in HLC order."""

    @abc.abstractmethod
    async def version_vector(self) -> VersionVector:
        """Highest stored sequence number per node (spec 4.1: a max, not a frontier)."""

    # -------------------------------------------------------------- outbound queue

    @abc.abstractmethod
    async def pending(self, limit: int | None = None) -> list[Operation]:
        """Queued local operations, oldest first (creation order, which is causal order)."""

    @abc.abstractmethod
    async def pending_count(self) -> int:
        """How many local operations wait for the server's acknowledgment."""

    @abc.abstractmethod
    async def acknowledge(self, op_ids: Iterable[str], *, power_safe: bool = True) -> int:
        """Remove acknowledged operations from the queue, durably, in one transaction.

        Call it only after the server acknowledged them.  Unknown ids are ignored.

        Args:
            op_ids: The acknowledged operations.
            power_safe: False lets a durable store skip syncing this commit to the disk:
                it survives a crash of the process, and a power loss only until the next
                synced commit.  Safe for a dequeue: an operation that comes back into the
                queue is sent again and the server drops the duplicate by id.

        Returns:
            How many queued operations were removed.
        """

    async def acknowledge_soon(self, op_ids: Iterable[str]) -> None:
        """``acknowledge(op_ids, power_safe=False)``, but the store may run it later: at the
        latest at the start of its next call that reads or writes the database, or in
        ``flush_acknowledged`` or ``aclose``.  Every read of the queue sees them gone.

        For the sync engine's dequeue after an acknowledgment: a SQLite store then runs it in
        the next call's worker thread instead of a thread hop of its own.  A crash before
        it ran leaves them queued, as a power loss can after ``power_safe=False``: they are
        sent again and the server drops the duplicates by id.
        """
        await self.acknowledge(op_ids, power_safe=False)

    async def flush_acknowledged(self) -> None:
        """Run the dequeue ``acknowledge_soon`` may have deferred, now."""
        await trio.lowlevel.checkpoint()  # nothing deferred here; SQLiteStore overrides it

    @abc.abstractmethod
    async def reject(
        self, op_id: str, *, code: str, message: str, retriable: bool
    ) -> RejectedOperation | None:
        """Record the server's rejection of a local operation and remove it from the queue.

        The operation stays in the log and its effect on the records stays: what to do
        about it is the app's decision (``rejected_operations`` lists them).

        Returns:
            The stored rejection, or None if ``op_id`` is not in the log.
        """

    @abc.abstractmethod
    async def rejected_operations(self) -> list[RejectedOperation]:
        """Rejections recorded by ``reject``, oldest first."""

    @abc.abstractmethod
    async def rebase_pending(self, server_time_ms: int) -> int:
        """Re-stamp queued operations stamped too far ahead of the server (spec 3.8).

        When queued (never acknowledged) operations carry a wall time beyond
        ``server_time_ms + 60 s`` (the server refuses those), every queued operation from
        the first such one on gets a new HLC timestamp based on ``server_time_ms``, in
        order, later than every other operation the store holds within that limit.  Their
        ids (content hashes) change, causal deps follow the old-to-new mapping, sequence
        numbers stay: the log rows, the queue entries and the records' field versions are
        replaced in one transaction, and change listeners hear of the records.  The clock
        restarts from the newest timestamp within the limit; while the physical clock runs
        more than 60 s ahead of the server, it is corrected by that lead, so later local
        writes are stamped near the server's time (the correction lasts until the store is
        closed, and every call sets it again from ``server_time_ms``).

        Args:
            server_time_ms: The server's time (``serverTime`` of the handshake-response).

        Returns:
            How many operations were re-stamped (0 when none was ahead).

        Raises:
            ValidationError: ``server_time_ms`` is not an int of ms >= 0.
            StoreFailedError: The database failed; nothing was changed.
        """

    # ----------------------------------------------------------- delivery watermark

    @abc.abstractmethod
    async def delivery_watermark(self, view: str = "") -> int:
        """The persisted delivery watermark of a view signature (0 if none, spec 4.4)."""

    @abc.abstractmethod
    async def set_delivery_watermark(self, view: str, value: int) -> None:
        """Persist a view's watermark; at most ``MAX_WATERMARK_VIEWS`` views are kept, the
        least recently set is dropped first."""

    async def set_delivery_watermark_soon(self, view: str, value: int) -> None:
        """``set_delivery_watermark``, but the store may write it later and not synced to
        the disk on its own: at the latest at the start of its next call that reads or
        writes the database (in order before it), or in ``flush_acknowledged`` or
        ``aclose``.  Every read of the watermark sees it.

        For a watermark that is all a delivery batch brings (the server skipped operations
        this client does not receive): acknowledging it before it is durable is safe, as a
        crash or power loss that loses it only makes the next connection start from the
        older watermark, and what is delivered again is dropped by id (``apply_remote``).
        A SQLite store then needs no thread hop and no synced commit of its own for it.
        """
        await self.set_delivery_watermark(view, value)

    # ------------------------------------------------------------------- metadata

    @abc.abstractmethod
    async def get_meta(self, key: str) -> str | None:
        """A small value an upper layer keeps with the store (see ``set_meta``).

        Returns:
            The value, or None if ``key`` was never set (or was removed).
        """

    @abc.abstractmethod
    async def set_meta(self, key: str, value: str | None) -> None:
        """Keep ``value`` under ``key`` (None removes it), durably, in its own transaction.

        For small settings of the layers above (the sync engine keeps the scope the server
        granted).  Keys live apart from the store's own bookkeeping, so any name is safe.

        Raises:
            ValidationError: ``key`` is not a non-empty str, or ``value`` not a str or None.
        """

    # ------------------------------------------------------------ change notification

    def add_change_listener(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener(changes)`` after every committed write that changed records.

        Returns:
            A function that removes the listener.
        """
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def add_queue_listener(self, listener: QueueListener) -> Callable[[], None]:
        """Call ``listener(operations)`` with the operations every committed local write
        enqueued, in queue order, right after its commit (in the task that wrote).

        Lets the sync engine keep its view of the queue current without reading it back.
        Only local writes enqueue; ``acknowledge``, ``reject`` and ``rebase_pending``
        change the queue without telling (their callers know).  Listeners must be quick
        and must not raise (an exception is logged and dropped).

        Returns:
            A function that removes the listener.
        """
        self._queue_listeners.append(listener)

        def remove() -> None:
            if listener in self._queue_listeners:
                self._queue_listeners.remove(listener)

        return remove

    def change_counter(self, collection: str | None = None) -> int:
        """A number that grows whenever records (of ``collection``, or any) change.

        Cheap to poll: compare with the value seen before to know whether to re-query.
        """
        if collection is None:
            return self._change_counter
        return self._collection_counters.get(collection, 0)

    def _notify(self, changes: ChangeSet) -> None:
        if not changes:
            return
        self._change_counter += 1
        for collection in changes.records:
            self._collection_counters[collection] = self._collection_counters.get(collection, 0) + 1
        for listener in list(self._listeners):
            try:
                listener(changes)
            except Exception:
                _log.exception("store change listener %r failed", listener)

    def _notify_queued(self, operations: Sequence[Operation]) -> None:
        if not operations:
            return
        for listener in list(self._queue_listeners):
            try:
                listener(operations)
            except Exception:
                _log.exception("store queue listener %r failed", listener)

    # ---------------------------------------------------------------------- misc

    @abc.abstractmethod
    def statistics(self) -> StoreStatistics:
        """Cheap numbers for diagnostics (queue depth of the store's worker)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the store; later calls raise ``ClosedError``.  Idempotent."""
