"""The ``ServerStore`` contract: the server's operation log, delivery order and records.

Theory of operation
-------------------

The server keeps one append-only log of operations.  ``append_batch`` is the only write and
stores a client batch **atomically**, in one transaction (which a store may share with other
batches waiting at the same time, as SQLite's group commit does, with the same outcome as
separate transactions in that order):

1. operations whose id is already stored (or that appear twice in the batch) are
   *duplicates*: nothing is written and no delivery sequence is used;
2. an optional ``admit(op, record)`` predicate (scope on write) sees each remaining operation
   together with its record's current state, *including* the effect of earlier operations of
   the same batch, and may reject it;
3. every applied operation gets the next **delivery sequence** (1, 2, 3, ...): the order in
   which operations were committed to this store.  There are no gaps and no reuse, also when
   several processes append to one PostgreSQL database at once, so "everything after delivery
   sequence W" is a complete, stable description of what a client is missing;
4. the version vector (per node, the *maximum* sequence number seen, spec 4.1) and the
   materialized records (``kora.merge.fold`` of each record's operations) are updated.

A commit is durable when ``append_batch`` returns (SQLite ``synchronous=FULL``, PostgreSQL
``synchronous_commit`` as configured, on by default), so the session may acknowledge the batch
right after it.  If the awaiting task is cancelled, the transaction may still commit; that is
safe, because a client resends unacknowledged operations and they come back as duplicates.

Readers never see a partial batch, and the operations visible at any time are exactly those
with delivery sequences ``1..max_delivery_sequence()``.

Waking up on new operations: ``wait_for_new(after)`` returns as soon as the store knows of a
delivery sequence above ``after``, whether the commit came from this process or, for
PostgreSQL, from another process sharing the database (LISTEN/NOTIFY).

Every method is a coroutine that runs the database work in a worker thread; none blocks the
event loop.  After ``aclose()`` every method raises ``ClosedError``.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

import attrs

from kora.core.errors import BrokenError
from kora.core.operation import Operation
from kora.core.version_vector import VersionVector
from kora.merge import RecordState

__all__ = [
    "Admit",
    "AppendResult",
    "AppendStatus",
    "DeliveredOperation",
    "OperationOutcome",
    "ServerStore",
    "ServerStoreError",
]


class ServerStoreError(BrokenError):
    """The database failed (connection lost, disk full, corrupt file...).

    The original ``sqlite3`` or ``psycopg`` exception is the ``__cause__``.  The transaction
    that was running is rolled back; the store may be used again (PostgreSQL reconnects).
    """


Admit = Callable[[Operation, RecordState | None], bool]
"""``admit(op, current_record) -> bool``: may ``op`` be written?

Called inside the append transaction, **in a worker thread**, so it must be a quick, pure,
synchronous function that does not raise (``kora.server.scopes.write_allowed`` wrapped in a
lambda is the intended use).  ``current_record`` is the record's state including deleted
records and the operations of the same batch admitted before ``op``; ``None`` if the record
has no operations yet.
"""


@attrs.frozen
class DeliveredOperation:
    """An operation together with the delivery sequence this store gave it."""

    operation: Operation
    delivery_sequence: int


class AppendStatus(enum.StrEnum):
    """What ``append_batch`` did with one operation."""

    #: Stored now; it has a delivery sequence and must be relayed.
    APPLIED = "applied"
    #: Already stored (or earlier in the same batch): nothing written, acknowledge as usual.
    DUPLICATE = "duplicate"
    #: ``admit`` refused it (scope on write): nothing written; answer ``SCOPE_VIOLATION``.
    REJECTED = "rejected"
    #: It cannot be folded into its record (an atomic op on a value of the wrong type, a
    #: number that overflows to infinity): nothing written; answer it as an invalid operation.
    INVALID = "invalid"


@attrs.frozen
class OperationOutcome:
    """The result for one operation of a batch, in batch order.

    Attributes:
        operation: The operation as it was passed in.
        status: See ``AppendStatus``.
        delivery_sequence: The delivery sequence for ``APPLIED``, else ``None``.
    """

    operation: Operation
    status: AppendStatus
    delivery_sequence: int | None = None


@attrs.frozen
class AppendResult:
    """The result of one ``append_batch`` call.

    Attributes:
        outcomes: One entry per operation passed in, in the same order.
        max_delivery_sequence: The store's maximum delivery sequence right after this commit
            (it can be above the last applied op's when another process appended in between).
    """

    outcomes: tuple[OperationOutcome, ...]
    max_delivery_sequence: int

    @property
    def applied(self) -> tuple[DeliveredOperation, ...]:
        """The newly stored operations in delivery order (what the hub relays)."""
        return tuple(
            DeliveredOperation(outcome.operation, outcome.delivery_sequence)
            for outcome in self.outcomes
            if outcome.delivery_sequence is not None
        )


class ServerStore(abc.ABC):
    """The operation log of a sync server (see the module docstring for the guarantees).

    Use it as an async context manager (``async with SqliteServerStore(path) as store``) or
    through the ``open_*_server_store`` helpers.  Implementations:
    ``MemoryServerStore``, ``SqliteServerStore``, ``PostgresServerStore``.
    """

    @property
    @abc.abstractmethod
    def node_id(self) -> str:
        """The server's own node id (persisted by the durable stores; valid after opening)."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, create the tables if needed and load the node id.  Called by ``__aenter__``."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections and threads.  Idempotent; waiters get ``ClosedError``."""

    @abc.abstractmethod
    async def append_batch(
        self, ops: Sequence[Operation], *, admit: Admit | None = None
    ) -> AppendResult:
        """Store a batch in one transaction (dedup, admit, delivery sequences, VV, records).

        Args:
            ops: Decoded, validated operations in the order the client sent them.
            admit: Optional scope-on-write check, see ``Admit``.

        Returns:
            One outcome per op.  The commit is durable when this returns.

        Raises:
            ServerStoreError: The database failed; nothing of the batch was stored.
        """

    @abc.abstractmethod
    async def max_delivery_sequence(self) -> int:
        """The highest delivery sequence committed so far (0 for an empty store)."""

    @abc.abstractmethod
    async def operations_after_delivery(self, after: int, limit: int) -> list[DeliveredOperation]:
        """Up to ``limit`` operations with delivery sequence ``> after``, ascending.

        The result is always a contiguous run ``after+1, after+2, ...``: page with the last
        returned delivery sequence until the list comes back shorter than ``limit``.
        """

    @abc.abstractmethod
    async def version_vector(self) -> VersionVector:
        """Per node, the highest sequence number stored (a maximum, not a frontier)."""

    @abc.abstractmethod
    async def operations_in_range(
        self, node_id: str, from_seq: int, to_seq: int
    ) -> list[Operation]:
        """The ops of ``node_id`` with ``from_seq <= sequence_number <= to_seq``, ascending."""

    @abc.abstractmethod
    async def find_record(
        self, collection: str, record_id: str, *, include_deleted: bool = True
    ) -> RecordState | None:
        """The materialized record (the fold of its operations), or ``None``.

        Deleted records keep their last fields and are returned unless ``include_deleted`` is
        false: the scope check of a delete needs the fields of what it deletes.
        """

    @abc.abstractmethod
    async def operation_count(self) -> int:
        """How many operations are stored."""

    @abc.abstractmethod
    async def wait_for_new(self, after: int) -> int:
        """Wait until a delivery sequence above ``after`` is committed; return the new max.

        Returns at once if the store already knows of one.  Commits of this store object are
        seen immediately; ``PostgresServerStore`` also sees other processes' commits through
        LISTEN/NOTIFY.  Cancel it like any trio wait.

        Raises:
            ClosedError: The store is or gets closed.
        """

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
