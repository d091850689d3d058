"""``SQLiteStore``: the default, durable store.

Threading model (style anchors 4.1, pattern A): one ``sqlite3`` connection, opened with
``check_same_thread=False`` and ``isolation_level=None``, used only from worker threads via
``trio.to_thread.run_sync`` behind this store's own ``CapacityLimiter(1)``, so no two jobs
touch it at once and the process-wide thread limiter is left alone.  Every transaction is one
synchronous function that starts with ``BEGIN IMMEDIATE`` and ends with ``COMMIT`` before it
returns: no transaction, cursor or row iteration ever spans an ``await``.  Calls keep
``abandon_on_cancel=False``: a cancelled caller waits for its transaction to finish, so the
transaction is never left running unowned.

Durability: WAL with ``synchronous=FULL``.  WAL alone survives a crash of the process at any
setting; FULL also syncs the WAL on every commit, so a write that returned survives a power
loss too (reliability.md 2.2: the client default is FULL, NORMAL may lose the last commits).
Pass ``synchronous="NORMAL"`` to trade that for speed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, TypeVar

import trio

from kora.core.errors import ClosedError, ValidationError
from kora.core.hlc import HLCTimestamp, HybridLogicalClock, system_clock_ms
from kora.core.ids import uuid7
from kora.core.operation import Operation, OpType
from kora.core.version_vector import VersionVector
from kora.merge import RecordState
from kora.store import _query
from kora.store._engine import (
    CorrectedClock,
    RebaseWrites,
    Replica,
    TxWrites,
    decode_atomic,
    dumps,
)
from kora.store._sqlite_schema import migrate
from kora.store.base import MAX_WATERMARK_VIEWS, Store, check_meta_item, check_watermark
from kora.store.errors import RecordNotFoundError, StoreFailedError, StoreVersionError
from kora.store.values import (
    ApplyResult,
    LocalMutation,
    Order,
    Record,
    RejectedOperation,
    RemoteRejection,
    StoreStatistics,
    Where,
)

__all__ = ["SQLiteStore", "open_sqlite_store"]

T = TypeVar("T")

#: How long ``aclose`` waits for the connection to close when the caller is cancelled.
CLOSE_TIMEOUT: Final = 10.0
#: At most this many indexes are created on demand (each one slows every write a little).
MAX_AUTO_INDEXES: Final = 32
_IN_CHUNK: Final = 500  # stays far below SQLite's bound-parameter limit

_OP_COLUMNS: Final = (
    "id, node_id, sequence_number, type, collection, record_id, hlc, data, previous_data, "
    "atomic_ops, causal_deps, schema_version, transaction_id, mutation_name"
)
_INSERT_OP: Final = f"INSERT INTO ops ({_OP_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
_ENQUEUE_FROM: Final = "INSERT INTO outbound (op_rowid) SELECT rowid FROM ops WHERE rowid > ?"
#: An op log row by id, through the index on the id's first 8 hex digits (schema v2).
# The unary plus keeps SQLite from propagating ``id = ?`` into ``substr(id, 1, 8)``, which
# would turn that into a constant and leave the index unused (a full scan).
_OP_BY_ID: Final = "substr(id, 1, 8) = ? AND +id = ?"
_RECORD_COLUMNS: Final = (
    "data, field_versions, field_atomic, deleted, version, created_version, last_op_id"
)
#: A record that one insert created: (collection, id, data, the insert's stamp, its id).
_INSERT_FRESH_RECORD: Final = (
    "INSERT INTO records (collection, id, data, field_versions, field_atomic, deleted, "
    "version, created_version, last_op_id) VALUES (?1, ?2, ?3, '{}', '{}', 0, ?4, ?4, ?5)"
)
#: The records that the op log rows above a rowid created, one insert each (as above).
_FRESH_RECORDS_FROM_OPS: Final = (
    "INSERT INTO records (collection, id, data, field_versions, field_atomic, deleted, "
    "version, created_version, last_op_id) SELECT collection, record_id, data, '{}', '{}', 0, "
    "hlc, hlc, id FROM ops WHERE rowid > ? ORDER BY rowid"
)
_UPSERT_RECORD: Final = (
    "INSERT INTO records (collection, id, data, field_versions, field_atomic, deleted, "
    "version, created_version, last_op_id) VALUES (?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (collection, id) DO UPDATE SET data = excluded.data, "
    "field_versions = excluded.field_versions, field_atomic = excluded.field_atomic, "
    "deleted = excluded.deleted, version = excluded.version, "
    "created_version = excluded.created_version, last_op_id = excluded.last_op_id"
)
_RAISE_VV: Final = (
    "INSERT INTO version_vector (node_id, sequence) VALUES (?, ?) "
    "ON CONFLICT (node_id) DO UPDATE SET sequence = max(sequence, excluded.sequence)"
)
_SET_META: Final = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
#: Keys of ``set_meta`` live under this prefix in the meta table, apart from the store's own.
_USER_META: Final = "user:"
_QUEUED_OP_COLUMNS: Final = ", ".join(f"o.{c.strip()}" for c in _OP_COLUMNS.split(","))

Synchronous = Literal["FULL", "NORMAL", "EXTRA"]


def _row_to_op(row: Sequence[Any]) -> Operation:
    (op_id, node_id, seq, type_, collection, record_id, hlc, data, previous, atomic, deps,
     schema_version, transaction_id, mutation_name) = row  # fmt: skip
    return Operation(
        id=op_id,
        node_id=node_id,
        type=OpType(type_),
        collection=collection,
        record_id=record_id,
        data=None if data is None else json.loads(data),
        previous_data=None if previous is None else json.loads(previous),
        timestamp=HLCTimestamp.parse(hlc),
        sequence_number=seq,
        causal_deps=tuple(json.loads(deps)),
        schema_version=schema_version,
        atomic_ops=decode_atomic(atomic),
        transaction_id=transaction_id,
        mutation_name=mutation_name,
    )


def _decode_versions(text: str, fields: dict[str, Any], version: str) -> dict[str, str]:
    differing: dict[str, str] = json.loads(text)
    return {name: differing.get(name, version) for name in fields}


def _encode_versions(state: RecordState) -> str:
    version = state.version
    differing = {name: v for name, v in state.field_versions.items() if v != version}
    return dumps(differing) if differing else "{}"


def _row_to_state(collection: str, record_id: str, row: Sequence[Any]) -> RecordState:
    data, versions, atomic, deleted, version, created, last_op = row
    fields = json.loads(data)
    return RecordState(
        collection=collection,
        record_id=record_id,
        fields=fields,
        field_versions=_decode_versions(versions, fields, version),
        field_atomic=json.loads(atomic),
        deleted=bool(deleted),
        version=version,
        created_version=created,
        last_op_id=last_op,
    )


def _row_to_record(row: Sequence[Any]) -> Record:
    collection, record_id, data, versions, deleted, version, created = row
    fields = json.loads(data)
    return Record(
        collection=collection,
        id=record_id,
        fields=fields,
        deleted=bool(deleted),
        version=version,
        created_version=created,
        field_versions=_decode_versions(versions, fields, version),
    )


_RECORD_SELECT: Final = (
    "SELECT collection, id, data, field_versions, deleted, version, created_version FROM records"
)


def _read_record(conn: sqlite3.Connection, collection: str, record_id: str) -> Record | None:
    row = conn.execute(
        f"{_RECORD_SELECT} WHERE collection = ? AND id = ?", (collection, record_id)
    ).fetchone()
    return None if row is None else _row_to_record(row)


def _id_key(op_id: object) -> object:
    """What the op log's id index holds for an id (see ``_OP_BY_ID``)."""
    return op_id[:8] if isinstance(op_id, str) else op_id


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


class _Reader:
    """``TxReader`` over the connection, inside the open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def load_record(self, collection: str, record_id: str) -> RecordState | None:
        row = self._conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE collection = ? AND id = ?",
            (collection, record_id),
        ).fetchone()
        return None if row is None else _row_to_state(collection, record_id, row)

    def load_records(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], RecordState]:
        by_collection: dict[str, list[str]] = {}
        for collection, record_id in keys:
            by_collection.setdefault(collection, []).append(record_id)
        found: dict[tuple[str, str], RecordState] = {}
        for collection, ids in by_collection.items():
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT id, {_RECORD_COLUMNS} FROM records "
                    f"WHERE collection = ? AND id IN ({marks})",
                    (collection, *chunk),
                )
                for record_id, *row in rows:
                    found[(collection, record_id)] = _row_to_state(collection, record_id, row)
        return found

    def load_record_ops(self, collection: str, record_id: str) -> list[Operation]:
        rows = self._conn.execute(
            f"SELECT {_OP_COLUMNS} FROM ops WHERE collection = ? AND record_id = ?",
            (collection, record_id),
        ).fetchall()
        return [_row_to_op(row) for row in rows]

    def known_op_ids(self, ids: Iterable[str]) -> set[str]:
        wanted = set(ids)
        found: set[str] = set()
        for chunk in _chunks(sorted({i[:8] for i in wanted if isinstance(i, str)})):
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT id FROM ops WHERE substr(id, 1, 8) IN ({marks})", chunk
            )
            found.update(row[0] for row in rows)
        return found & wanted

    def op_id_at(self, node_id: str, sequence_number: int) -> str | None:
        row = self._conn.execute(
            "SELECT id FROM ops WHERE node_id = ? AND sequence_number = ?",
            (node_id, sequence_number),
        ).fetchone()
        return None if row is None else str(row[0])

    def last_local_op_id(self, node_id: str, collection: str) -> str | None:
        row = self._conn.execute(
            "SELECT id FROM ops WHERE node_id = ? AND collection = ? "
            "ORDER BY sequence_number DESC LIMIT 1",
            (node_id, collection),
        ).fetchone()
        return None if row is None else str(row[0])

    def queued_from_stamp(self, stamp: str) -> list[Operation]:
        rows = self._conn.execute(
            f"SELECT {_QUEUED_OP_COLUMNS} FROM outbound q JOIN ops o ON o.rowid = q.op_rowid "
            "WHERE q.op_rowid >= (SELECT min(a.op_rowid) FROM outbound a "
            "JOIN ops b ON b.rowid = a.op_rowid WHERE b.hlc >= ?) ORDER BY q.op_rowid",
            (stamp,),
        ).fetchall()
        return [_row_to_op(row) for row in rows]

    def max_stamp_below(self, stamp: str, excluding: Collection[str]) -> str | None:
        # At most len(excluding) of the greatest stamps can be excluded ones.
        rows = self._conn.execute(
            "SELECT id, hlc FROM ops WHERE hlc < ? ORDER BY hlc DESC LIMIT ?",
            (stamp, len(excluding) + 1),
        )
        return next((str(hlc) for op_id, hlc in rows if op_id not in excluding), None)


def _upsert_records(conn: sqlite3.Connection, states: Iterable[RecordState]) -> None:
    conn.executemany(
        _UPSERT_RECORD,
        [
            (state.collection, state.record_id, dumps(state.fields), _encode_versions(state),
             dumps(state.field_atomic) if state.field_atomic else "{}", int(state.deleted),
             state.version, state.created_version, state.last_op_id)
            for state in states
        ],
    )  # fmt: skip


def _write_rebase(conn: sqlite3.Connection, writes: RebaseWrites) -> None:
    """Replace the re-stamped rows in place: same rowid, so the queue entries stay put."""
    conn.executemany(
        f"UPDATE ops SET id = ?, hlc = ?, causal_deps = ? WHERE {_OP_BY_ID}",
        [
            (op.id, encoded[0], encoded[4], _id_key(old_id), old_id)
            for old_id, op, encoded in writes.replaced
        ],
    )
    if writes.records:
        _upsert_records(conn, writes.records.values())
    if writes.clock is not None:
        if writes.clock_last is None:
            conn.execute("DELETE FROM meta WHERE key = 'hlc'")
        else:
            conn.execute(_SET_META, ("hlc", writes.clock_last.serialize()))


def _set_watermark(conn: sqlite3.Connection, view: str, value: int) -> None:
    """Set a view's delivery watermark, dropping the least recently set views beyond
    ``MAX_WATERMARK_VIEWS`` (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO watermarks (view, value, touched) VALUES "
        "(?, ?, (SELECT coalesce(max(touched), 0) + 1 FROM watermarks)) "
        "ON CONFLICT (view) DO UPDATE SET value = excluded.value, "
        "touched = excluded.touched",
        (view, value),
    )
    conn.execute(
        "DELETE FROM watermarks WHERE view NOT IN "
        "(SELECT view FROM watermarks ORDER BY touched DESC LIMIT ?)",
        (MAX_WATERMARK_VIEWS,),
    )


_log: Final = logging.getLogger("kora.store")

_SQL_SAFE: Final = re.compile(r"[0-9A-Za-z._:-]+")
_plain_statements: dict[tuple[str, int], str] = {}


def _plain_insert_statement(tx: TxWrites) -> str | None:
    """For a transaction of plain local inserts only, the op log insert with the node id,
    type, schema version and empty columns written into the SQL: each column bound costs
    about as much as building the row (the rest is bound as ``(id, sequence number,
    collection, record id, stamp, data, deps, transaction id, mutation name)``)."""
    rows = tx.rows
    if tx.plain_inserts != len(rows) or not rows:
        return None
    node, schema_version = rows[0][1], rows[0][11]
    statement = _plain_statements.get((node, schema_version))
    if statement is None:
        if _SQL_SAFE.fullmatch(node) is None or type(schema_version) is not int:
            return None
        statement = (
            f"INSERT INTO ops ({_OP_COLUMNS}) VALUES "
            f"(?1, '{node}', ?2, 'insert', ?3, ?4, ?5, ?6, NULL, NULL, ?7, {schema_version}, "
            "?8, ?9)"
        )
        if len(_plain_statements) < 64:
            _plain_statements[(node, schema_version)] = statement
    return statement


def _write(conn: sqlite3.Connection, tx: TxWrites) -> None:
    """Write a planned transaction with one ``executemany`` per table."""
    # A remote group that only creates records (a catch-up) copies them from its op log
    # rows in SQLite: no row of Python values to build and bind per record.
    records_from_ops = not tx.queued and len(tx.fresh) == len(tx.rows) > 0
    if tx.ops:
        if tx.queued or records_from_ops:
            (base,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM ops").fetchone()
            tx.rowid_base = base
        plain = _plain_insert_statement(tx)
        if plain is None:
            conn.executemany(_INSERT_OP, tx.rows)
        else:
            conn.executemany(
                plain, [(r[0], r[2], r[4], r[5], r[6], r[7], r[10], r[12], r[13]) for r in tx.rows]
            )
        if tx.queued:
            # SQLite gives each new row the rowid max + 1, so this transaction's operations
            # are exactly the rows above the maximum before it, in order (we hold the lock).
            conn.execute(_ENQUEUE_FROM, (base,))
    if records_from_ops:
        # Every row of this transaction created its record (fresh holds each index once).
        conn.execute(_FRESH_RECORDS_FROM_OPS, (base,))
    elif tx.fresh:
        # New records: every field at the record's version, nothing atomic yet.
        conn.executemany(
            _INSERT_FRESH_RECORD,
            [(r[4], r[5], r[7], r[6], r[0]) for r in map(tx.rows.__getitem__, tx.fresh.values())],
        )
    if tx.records:
        _upsert_records(conn, tx.records.values())
    if tx.vv:
        conn.executemany(_RAISE_VV, list(tx.vv.items()))
    if tx.clock_last is not None:
        conn.execute(_SET_META, ("hlc", tx.clock_last.serialize()))


class SQLiteStore(Store):
    """The durable store on one SQLite database file.  Use ``open_sqlite_store``."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        replica: Replica,
        physical_clock: Callable[[], int],
        indexes: set[str],
        synchronous: Synchronous = "FULL",
    ) -> None:
        super().__init__()
        self._conn = conn
        self._synchronous = synchronous
        self._replica = replica
        self._physical_clock = physical_clock
        self._limiter = trio.CapacityLimiter(1)
        self._indexes = indexes
        self._shapes_seen: set[tuple[str, ...]] = set()
        self._closed = False
        #: Acknowledged operations to dequeue (unsynced) at the start of the next worker call
        #: (``acknowledge_soon``), as an ordered set.
        self._to_dequeue: dict[str, None] = {}
        #: Delivery watermarks to set (unsynced) at the start of the next worker call
        #: (``set_delivery_watermark_soon``): the newest value of each view.
        self._watermarks_soon: dict[str, int] = {}
        #: Op log rowid of the operations this store queued since it opened, by id, so an
        #: acknowledgment dequeues by rowid rather than through the id index (an op log row
        #: keeps its rowid; a clock rebase renames ids in place and moves them here too).
        #: Any id missing is dequeued through the index.  Touched by worker calls only.
        self._queued_rowids: dict[str, int] = {}

    # ----------------------------------------------------------------- plumbing

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise ClosedError("the store is closed")
        if self._to_dequeue or self._watermarks_soon:
            fn = self._deferred_first(fn)
        return await trio.to_thread.run_sync(
            fn, self._conn, limiter=self._limiter, thread_name="kora-store"
        )

    def _deferred_first(
        self, fn: Callable[[sqlite3.Connection], T]
    ) -> Callable[[sqlite3.Connection], T]:
        """``fn`` preceded, in the same worker call, by the writes deferred by
        ``acknowledge_soon`` and ``set_delivery_watermark_soon`` (one unsynced transaction
        of their own, so ``fn`` sees the queue and the watermarks with them).

        Taken now, before the call waits for the store's limiter: the limiter is first in,
        first out, so no later call can run before this one."""
        ids = list(self._to_dequeue)
        self._to_dequeue.clear()
        watermarks = list(self._watermarks_soon.items())
        self._watermarks_soon.clear()
        synchronous = self._synchronous

        queued_rowids = self._queued_rowids

        def deferred(conn: sqlite3.Connection) -> None:
            _dequeue(conn, ids, queued_rowids)
            for view, value in watermarks:
                _set_watermark(conn, view, value)

        def work(conn: sqlite3.Connection) -> T:
            try:
                _unsynced(conn, deferred, synchronous)
            except StoreFailedError as exc:
                # They stay queued: sent again on the next connection, the server drops
                # the duplicates by id; a lost watermark only makes the next connection
                # deliver again what the store drops by id.  The caller's own work must not
                # fail for it.
                _log.warning(
                    "deferred dequeue of %d operations and %d watermarks failed: %s",
                    len(ids),
                    len(watermarks),
                    exc,
                )
            return fn(conn)

        return work

    async def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` in the worker thread."""
        return await self._run(lambda conn: _in_transaction(conn, fn))

    async def _write_transaction(
        self,
        plan: Callable[[_Reader], T],
        tx_of: Callable[[T], TxWrites],
        *,
        after: Callable[[sqlite3.Connection], object] | None = None,
        before_commit: Callable[[], object] | None = None,
    ) -> T:
        """Plan, write and commit in the worker; publish to the replica before releasing it.

        The replica's in-memory copies (version vector, last local ops) must move before the
        next queued transaction plans, so the publish happens in the same worker call.
        ``after`` writes more rows (or reads) in the same transaction, after the planned ones.
        The rowids of queued operations are remembered once committed (see ``_dequeue``).
        """

        def work(conn: sqlite3.Connection) -> T:
            def body(c: sqlite3.Connection) -> T:
                planned = plan(_Reader(c))
                _write(c, tx_of(planned))
                if after is not None:
                    after(c)
                if before_commit is not None:
                    before_commit()  # everything is written; the commit follows
                return planned

            planned = _in_transaction(conn, body)
            tx = tx_of(planned)
            self._replica.committed(tx)
            if tx.queued and tx.rowid_base is not None:
                first = tx.rowid_base + 1
                ids = (op.id for op in tx.ops)
                self._queued_rowids.update(zip(ids, range(first, first + len(tx.ops)), strict=True))
            return planned

        return await self._run(work)

    # ------------------------------------------------------------------ identity

    @property
    def node_id(self) -> str:
        return self._replica.node_id

    async def last_timestamp(self) -> HLCTimestamp | None:
        return await self._run(lambda _: self._replica.clock.last)

    # -------------------------------------------------------------------- writes

    async def write_local_many(
        self, mutations: Sequence[LocalMutation], *, transaction_id: str | None = None
    ) -> list[Operation]:
        batch = list(mutations)
        tx = await self._write_transaction(
            lambda reader: self._replica.plan_local(reader, batch, transaction_id), lambda t: t
        )
        self._notify(tx.changes())
        self._notify_queued(tx.ops)
        return tx.ops

    async def write_local_and_get(
        self, mutation: LocalMutation, collection: str, record_id: str
    ) -> tuple[Operation, Record]:
        # The read-back runs in the write's worker call, inside its transaction after the
        # planned rows: one thread hop less than write_local + get (a hop costs about
        # 0.1 ms of CPU), and the same row, as nothing else writes between the two.
        read: list[Record | None] = []

        def read_back(conn: sqlite3.Connection) -> None:
            read.append(_read_record(conn, collection, record_id))

        tx = await self._write_transaction(
            lambda reader: self._replica.plan_local(reader, [mutation], None),
            lambda t: t,
            after=read_back,
        )
        self._notify(tx.changes())
        self._notify_queued(tx.ops)
        record = read[0]
        if record is None:  # pragma: no cover - the write just committed is in the log
            raise RecordNotFoundError(f"{collection}/{record_id} vanished after a write")
        return tx.ops[0], record

    async def apply_remote(
        self,
        operations: Iterable[Operation],
        *,
        watermark: tuple[str, int] | None = None,
        before_commit: Callable[[], object] | None = None,
    ) -> ApplyResult:
        batch = list(operations)
        if watermark is not None:
            check_watermark(watermark[1])
        retry_later: list[bool] = [False]

        def plan(reader: _Reader) -> tuple[TxWrites, int, list[RemoteRejection]]:
            planned = self._replica.plan_remote(reader, batch)
            retry_later[0] = any(rejection.retriable for rejection in planned[2])
            return planned

        def store_watermark(conn: sqlite3.Connection) -> None:
            # An operation refused for now (clock drift) must come again: the watermark
            # stays where it was, so the next connection's delivery resumes before it.
            if watermark is not None and not retry_later[0]:
                _set_watermark(conn, *watermark)

        tx, duplicates, rejected = await self._write_transaction(
            plan,
            lambda planned: planned[0],
            after=None if watermark is None else store_watermark,
            before_commit=before_commit,
        )
        result = ApplyResult(
            applied=tuple(tx.ops),
            duplicates=duplicates,
            rejected=tuple(rejected),
            changes=tx.changes(),
        )
        self._notify(result.changes)
        return result

    # ------------------------------------------------------------------- records

    async def get(
        self, collection: str, record_id: str, *, include_deleted: bool = False
    ) -> Record | None:
        record = await self._run(lambda conn: _read_record(conn, collection, record_id))
        if record is None or (record.deleted and not include_deleted):
            return None
        return record

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
        spec = _query.query_spec(collection, where, order_by, limit, offset, include_deleted)
        clause, params = _query.where_sql(spec)
        sql = f"{_RECORD_SELECT} WHERE {clause} ORDER BY {_query.order_sql(spec)}"
        if spec.limit is not None or spec.offset:
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if spec.limit is None else spec.limit, spec.offset]

        def work(conn: sqlite3.Connection) -> list[Record]:
            self._ensure_index_sync(conn, collection, spec.index_fields())
            return [_row_to_record(row) for row in conn.execute(sql, params).fetchall()]

        return await self._run(work)

    async def count(
        self, collection: str, where: Sequence[Where] = (), *, include_deleted: bool = False
    ) -> int:
        spec = _query.query_spec(collection, where, (), None, 0, include_deleted)
        clause, params = _query.where_sql(spec)

        def work(conn: sqlite3.Connection) -> int:
            self._ensure_index_sync(conn, collection, spec.index_fields())
            (total,) = conn.execute(
                f"SELECT count(*) FROM records WHERE {clause}", params
            ).fetchone()
            return int(total)

        return await self._run(work)

    async def ensure_index(self, collection: str, fields: Sequence[str]) -> None:
        names = tuple(_query.check_field(name) for name in fields)
        await self._run(lambda conn: self._ensure_index_sync(conn, collection, names, force=True))

    def _ensure_index_sync(
        self,
        conn: sqlite3.Connection,
        collection: str,
        fields: Sequence[str],
        *,
        force: bool = False,
    ) -> None:
        """Create the index a query shape needs, once (runs in the worker)."""
        if not fields or (not force and tuple(fields) in self._shapes_seen):
            return
        digest = hashlib.sha1(json.dumps(fields).encode()).hexdigest()[:16]
        name = f"kx_{digest}"
        if name in self._indexes or (len(self._indexes) >= MAX_AUTO_INDEXES and not force):
            self._shapes_seen.add(tuple(fields))
            return
        columns = ", ".join(["collection", "deleted", *map(_query.field_expression, fields)])
        # Not per collection: the planner can use it for any collection equally well, and
        # one index per field list keeps the count bounded.
        _in_transaction(
            conn, lambda c: c.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON records ({columns})')
        )
        self._indexes.add(name)
        self._shapes_seen.add(tuple(fields))

    # ----------------------------------------------------------------------- log

    async def operations_in_range(
        self, node_id: str, from_sequence: int, to_sequence: int
    ) -> list[Operation]:
        def work(conn: sqlite3.Connection) -> list[Operation]:
            rows = conn.execute(
                f"SELECT {_OP_COLUMNS} FROM ops WHERE node_id = ? "
                "AND sequence_number BETWEEN ? AND ? ORDER BY sequence_number",
                (node_id, from_sequence, to_sequence),
            ).fetchall()
            return [_row_to_op(row) for row in rows]

        return await self._run(work)

    async def operations_for_record(self, collection: str, record_id: str) -> list[Operation]:
        ops = await self._run(lambda conn: _Reader(conn).load_record_ops(collection, record_id))
        return sorted(ops, key=lambda op: (op.timestamp.sort_key(), op.id))

    async def version_vector(self) -> VersionVector:
        return await self._run(lambda _: VersionVector(dict(self._replica.vv)))

    # ------------------------------------------------------------ outbound queue

    async def pending(self, limit: int | None = None) -> list[Operation]:
        def work(conn: sqlite3.Connection) -> list[Operation]:
            rows = conn.execute(
                f"SELECT {_QUEUED_OP_COLUMNS} FROM outbound q JOIN ops o ON o.rowid = q.op_rowid "
                "ORDER BY q.op_rowid LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
            return [_row_to_op(row) for row in rows]

        return await self._run(work)

    async def pending_count(self) -> int:
        def work(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT count(*) FROM outbound").fetchone()[0])

        return await self._run(work)

    async def acknowledge(self, op_ids: Iterable[str], *, power_safe: bool = True) -> int:
        ids = list(dict.fromkeys(op_ids))
        if not ids:
            return 0
        rowids = self._queued_rowids
        if power_safe:
            return await self._transaction(lambda conn: _dequeue(conn, ids, rowids))
        synchronous = self._synchronous
        return await self._run(lambda conn: _dequeue_unsynced(conn, ids, synchronous, rowids))

    async def acknowledge_soon(self, op_ids: Iterable[str]) -> None:
        # No thread hop of its own: the next worker call (the next local write, a read of
        # the queue, flush_acknowledged or the close) dequeues them first.
        if self._closed:
            raise ClosedError("the store is closed")
        self._to_dequeue.update(dict.fromkeys(op_ids))
        await trio.lowlevel.checkpoint()

    async def flush_acknowledged(self) -> None:
        if self._to_dequeue or self._watermarks_soon:
            await self._run(lambda _: None)
        else:
            await trio.lowlevel.checkpoint()

    async def reject(
        self, op_id: str, *, code: str, message: str, retriable: bool
    ) -> RejectedOperation | None:
        rejection = RejectedOperation(op_id, code, message, bool(retriable), self._physical_clock())

        def work(conn: sqlite3.Connection) -> RejectedOperation | None:
            found = conn.execute(
                f"SELECT rowid FROM ops WHERE {_OP_BY_ID}", (_id_key(op_id), op_id)
            ).fetchone()
            if found is None:
                return None
            self._queued_rowids.pop(op_id, None)
            conn.execute("DELETE FROM outbound WHERE op_rowid = ?", found)
            conn.execute(
                "INSERT OR REPLACE INTO rejected (op_id, code, message, retriable, rejected_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (op_id, code, message, int(rejection.retriable), rejection.rejected_at),
            )
            return rejection

        return await self._transaction(work)

    async def rejected_operations(self) -> list[RejectedOperation]:
        def work(conn: sqlite3.Connection) -> list[RejectedOperation]:
            rows = conn.execute(
                "SELECT op_id, code, message, retriable, rejected_at FROM rejected "
                "ORDER BY rejected_at, op_id"
            ).fetchall()
            return [RejectedOperation(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

        return await self._run(work)

    async def rebase_pending(self, server_time_ms: int) -> int:
        def work(conn: sqlite3.Connection) -> RebaseWrites:
            def body(c: sqlite3.Connection) -> RebaseWrites:
                writes = self._replica.plan_rebase(_Reader(c), server_time_ms)
                if writes.writes_anything:
                    _write_rebase(c, writes)
                return writes

            writes = _in_transaction(conn, body)
            self._replica.committed_rebase(writes)
            rowids = self._queued_rowids
            for old_id, op, _ in writes.replaced:  # same rows, new ids
                rowid = rowids.pop(old_id, None)
                if rowid is not None:
                    rowids[op.id] = rowid
            return writes

        writes = await self._run(work)
        self._notify(writes.changes())
        return len(writes.replaced)

    # -------------------------------------------------------- delivery watermark

    async def delivery_watermark(self, view: str = "") -> int:
        def work(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT value FROM watermarks WHERE view = ?", (view,)).fetchone()
            return 0 if row is None else int(row[0])

        return await self._run(work)

    async def set_delivery_watermark(self, view: str, value: int) -> None:
        check_watermark(value)
        await self._transaction(lambda conn: _set_watermark(conn, view, value))

    async def set_delivery_watermark_soon(self, view: str, value: int) -> None:
        # No thread hop of its own: the next worker call writes it first (see the base).
        if self._closed:
            raise ClosedError("the store is closed")
        check_watermark(value)
        self._watermarks_soon.pop(view, None)  # newest last: set in the order they came
        self._watermarks_soon[view] = value
        await trio.lowlevel.checkpoint()

    # ----------------------------------------------------------------- metadata

    async def get_meta(self, key: str) -> str | None:
        check_meta_item(key)

        def work(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT value FROM meta WHERE key = ?", (_USER_META + key,)
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._run(work)

    async def set_meta(self, key: str, value: str | None) -> None:
        check_meta_item(key, value)

        def work(conn: sqlite3.Connection) -> None:
            if value is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (_USER_META + key,))
            else:
                conn.execute(_SET_META, (_USER_META + key, value))

        await self._transaction(work)

    # --------------------------------------------------------------------- misc

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            tasks_waiting=self._limiter.statistics().tasks_waiting,
            change_counter=self._change_counter,
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True

        # Runs even when the caller is cancelled: an unclosed WAL connection keeps its -wal
        # file and lock.  The timeout bounds the wait for a transaction still in flight.
        def close(conn: sqlite3.Connection) -> None:
            conn.close()

        job = self._deferred_first(close) if self._to_dequeue or self._watermarks_soon else close
        with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
            await trio.to_thread.run_sync(
                job, self._conn, limiter=self._limiter, thread_name="kora-store"
            )


def _dequeue(
    conn: sqlite3.Connection, ids: Sequence[str], rowids: dict[str, int] | None = None
) -> int:
    """Remove acknowledged operations from the queue (inside the caller's transaction).

    ``rowids``: the op log rowids of queued operations by id, where known (taken out of it:
    if this transaction fails, those ids are dequeued through the id index next time).
    """
    before = conn.total_changes
    by_rowid: list[tuple[int]] = []
    by_id: list[tuple[object, str]] = []
    for op_id in ids:
        rowid = None if rowids is None else rowids.pop(op_id, None)
        if rowid is None:
            by_id.append((_id_key(op_id), op_id))
        else:
            by_rowid.append((rowid,))
    if by_rowid:
        conn.executemany("DELETE FROM outbound WHERE op_rowid = ?", by_rowid)
    if by_id:
        conn.executemany(
            f"DELETE FROM outbound WHERE op_rowid = (SELECT rowid FROM ops WHERE {_OP_BY_ID})",
            by_id,
        )
    return conn.total_changes - before


def _dequeue_unsynced(
    conn: sqlite3.Connection,
    ids: Sequence[str],
    synchronous: str,
    rowids: dict[str, int] | None = None,
) -> int:
    """``_dequeue`` in its own transaction, not synced to the disk."""
    return _unsynced(conn, lambda c: _dequeue(c, ids, rowids), synchronous)


def _unsynced(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], synchronous: str
) -> T:
    """``fn`` in its own transaction, not synced to the disk."""
    if synchronous == "NORMAL":
        return _in_transaction(conn, fn)
    # In WAL mode a NORMAL commit is not synced; the next FULL commit syncs the WAL file,
    # this commit's frames with it.
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        return _in_transaction(conn, fn)
    finally:
        conn.execute(f"PRAGMA synchronous = {synchronous}")


def _in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """One transaction: ``BEGIN IMMEDIATE``, ``fn``, ``COMMIT`` (or ``ROLLBACK`` on error).

    Errors of SQLite itself become ``StoreFailedError``; our own errors pass unchanged.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StoreFailedError(f"cannot begin a transaction: {exc}") from exc
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the original error says more; SQLite rolls back on close anyway
        if isinstance(exc, sqlite3.Error):
            raise StoreFailedError(f"store transaction failed: {exc}") from exc
        raise
    return result


def _open_connection(
    path: str,
    node_id: str | None,
    synchronous: Synchronous,
    target_version: int | None,
) -> tuple[sqlite3.Connection, str, HLCTimestamp | None, dict[str, int], set[str]]:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        # 32 MiB of page cache: the op log's id index is random-access and outgrows the
        # default 2 MiB after some ten thousand operations.
        conn.execute("PRAGMA cache_size = -32768")

        def setup(c: sqlite3.Connection) -> tuple[str, HLCTimestamp | None]:
            migrate(c, target_version)
            meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
            stored = meta.get("node_id")
            if stored is None:
                stored = node_id or uuid7()
                c.execute(_SET_META, ("node_id", stored))
                c.execute(_SET_META, ("created_at", str(int(time.time() * 1000))))
            elif node_id is not None and node_id != stored:
                raise StoreVersionError(
                    f"this database belongs to node {stored}, not to the requested {node_id}"
                )
            hlc = meta.get("hlc")
            return stored, None if hlc is None else HLCTimestamp.parse(hlc)

        stored_node, last = _in_transaction(conn, setup)
        vv = {
            str(n): int(s) for n, s in conn.execute("SELECT node_id, sequence FROM version_vector")
        }
        indexes = {
            str(row[0])
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'kx\\_%' "
                "ESCAPE '\\'"
            )
        }
    except BaseException:
        conn.close()
        raise
    return conn, stored_node, last, vv, indexes


@asynccontextmanager
async def open_sqlite_store(
    path: str,
    *,
    node_id: str | None = None,
    schema_version: int = 1,
    synchronous: Synchronous = "FULL",
    physical_clock: Callable[[], int] | None = None,
) -> AsyncIterator[SQLiteStore]:
    """Open (creating or migrating) the store in the SQLite file ``path``.

    ``async with`` waits for the database to open in a worker thread (a checkpoint); on
    exit the connection is closed, even if the block is cancelled.

    Args:
        path: Database file, or ``":memory:"`` for a throw-away SQLite database.
        node_id: Use this node id for a new database; an existing one must match.
        schema_version: The app schema version stamped on new local operations.
        synchronous: SQLite ``synchronous`` setting; FULL (default) survives power loss.
        physical_clock: Milliseconds since the epoch for the HLC (tests inject one).

    Raises:
        StoreVersionError: The database was written by a newer store schema, or belongs to
            another node id.
        StoreFailedError: SQLite cannot open or set up the file.
    """
    if synchronous not in ("FULL", "NORMAL", "EXTRA"):
        raise ValidationError(f"unsupported synchronous setting {synchronous!r}")
    try:
        conn, stored_node, last, vv, indexes = await trio.to_thread.run_sync(
            _open_connection, path, node_id, synchronous, None
        )
    except sqlite3.Error as exc:
        raise StoreFailedError(f"cannot open the store at {path!r}: {exc}") from exc
    clock_source = physical_clock or system_clock_ms
    physical = CorrectedClock(clock_source)
    clock = HybridLogicalClock(stored_node, physical, last=last)
    replica = Replica(stored_node, clock, vv, physical=physical, schema_version=schema_version)
    store = SQLiteStore(conn, replica, clock_source, indexes, synchronous)
    try:
        yield store
    finally:
        await store.aclose()
