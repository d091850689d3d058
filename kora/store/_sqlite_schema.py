"""The SQLite store's tables, and the migrations between versions of them.

``PRAGMA user_version`` holds the store schema version.  Opening a database runs, in one
transaction, every migration from its version up to ``SCHEMA_VERSION``; a database whose
version is newer than this code knows is refused (``StoreVersionError``) rather than
guessed at.  To change the schema: bump ``SCHEMA_VERSION`` and add the step that upgrades
``SCHEMA_VERSION - 1`` to it in ``MIGRATIONS``; never edit a released step.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Final

from kora.store.errors import StoreVersionError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

_V1: Final = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- The operation log: every operation this node holds, local or remote, once.
CREATE TABLE ops (
    rowid           INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    node_id         TEXT NOT NULL,
    sequence_number INTEGER NOT NULL,
    type            TEXT NOT NULL,
    collection      TEXT NOT NULL,
    record_id       TEXT NOT NULL,
    hlc             TEXT NOT NULL,
    data            TEXT,
    previous_data   TEXT,
    atomic_ops      TEXT,
    causal_deps     TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    transaction_id  TEXT,
    mutation_name   TEXT,
    UNIQUE (node_id, sequence_number)
);
CREATE INDEX ops_by_record ON ops (collection, record_id);

-- Materialized records of every collection.  Queries filter data with json_extract, and
-- indexes on those expressions are created on demand.  field_versions lists only the fields
-- whose version differs from the record's version (after an insert: none).
CREATE TABLE records (
    rowid           INTEGER PRIMARY KEY,
    collection      TEXT NOT NULL,
    id              TEXT NOT NULL,
    data            TEXT NOT NULL,
    field_versions  TEXT NOT NULL,
    field_atomic    TEXT NOT NULL,
    deleted         INTEGER NOT NULL,
    version         TEXT NOT NULL,
    created_version TEXT NOT NULL,
    last_op_id      TEXT NOT NULL,
    UNIQUE (collection, id)
);

CREATE TABLE version_vector (
    node_id  TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL
) WITHOUT ROWID;

-- Durable outbound queue: the op log rowids of unacknowledged local operations.  Rowids
-- grow with insertion, so their order is creation order, which is causal order.
CREATE TABLE outbound (
    op_rowid INTEGER PRIMARY KEY
);

CREATE TABLE watermarks (
    view    TEXT PRIMARY KEY,
    value   INTEGER NOT NULL,
    touched INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE rejected (
    op_id       TEXT PRIMARY KEY,
    code        TEXT NOT NULL,
    message     TEXT NOT NULL,
    retriable   INTEGER NOT NULL,
    rejected_at INTEGER NOT NULL
) WITHOUT ROWID;
"""


#: Version 2: the op log's ids are found through an index on their first 8 hex digits
#: instead of a unique index on the whole 64: content ids are random, so every insert lands
#: on a random page of that index, and a commit of N operations rewrote up to N of its pages
#: (the largest part of a local write's SQL).  Cells of 8 characters make it a sixth of the
#: size.  A lookup by id reads ``substr(id, 1, 8) = ? AND id = ?``; an id is still stored at
#: most once, which the planner checks (it looks every incoming id up before inserting).
_OPS_V2: Final = """
CREATE TABLE ops_v2 (
    rowid           INTEGER PRIMARY KEY,
    id              TEXT NOT NULL,
    node_id         TEXT NOT NULL,
    sequence_number INTEGER NOT NULL,
    type            TEXT NOT NULL,
    collection      TEXT NOT NULL,
    record_id       TEXT NOT NULL,
    hlc             TEXT NOT NULL,
    data            TEXT,
    previous_data   TEXT,
    atomic_ops      TEXT,
    causal_deps     TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    transaction_id  TEXT,
    mutation_name   TEXT,
    UNIQUE (node_id, sequence_number)
);
INSERT INTO ops_v2 SELECT * FROM ops ORDER BY rowid;
DROP TABLE ops;
ALTER TABLE ops_v2 RENAME TO ops;
CREATE INDEX ops_by_record ON ops (collection, record_id);
CREATE INDEX ops_by_id ON ops (substr(id, 1, 8));
"""


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # Not executescript: it would commit the caller's open transaction.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _create_v1(conn: sqlite3.Connection) -> None:
    _run_script(conn, _V1)


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    _run_script(conn, _OPS_V2)


#: ``MIGRATIONS[n]`` upgrades a database at version ``n`` to ``n + 1`` (0 is an empty file).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {0: _create_v1, 1: _v1_to_v2}
#: The store schema version this code writes.
SCHEMA_VERSION: Final = 2


def migrate(conn: sqlite3.Connection, target: int | None = None) -> int:
    """Bring the schema to ``target`` (default ``SCHEMA_VERSION``) inside the open transaction.

    Returns:
        The version the database had before.

    Raises:
        StoreVersionError: If the database is newer than ``target``.
    """
    target = SCHEMA_VERSION if target is None else target
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    if found > target:
        raise StoreVersionError(
            f"the database has store schema version {found}, newer than this Kora "
            f"supports ({target}); open it with a newer kora-sync"
        )
    for version in range(found, target):
        MIGRATIONS[version](conn)
    if found != target:
        conn.execute(f"PRAGMA user_version = {int(target)}")
    return int(found)
