"""``open_store``: pick the store from a path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from os import PathLike

from kora.store.base import Store
from kora.store.memory import open_memory_store
from kora.store.sqlite import Synchronous, open_sqlite_store

__all__ = ["open_store"]


@asynccontextmanager
async def open_store(
    path: str | PathLike[str] | None,
    *,
    node_id: str | None = None,
    schema_version: int = 1,
    synchronous: Synchronous = "FULL",
    physical_clock: Callable[[], int] | None = None,
) -> AsyncIterator[Store]:
    """Open the store for ``path``.

    * a file path: ``SQLiteStore`` in that file (created or migrated);
    * ``":memory:"``: ``SQLiteStore`` on a throw-away SQLite database (same SQL, no file);
    * ``None``: ``MemoryStore`` (pure Python, nothing persisted).

    Args:
        path: See above.
        node_id: Node id for a new store (an existing SQLite store must match it).
        schema_version: The app schema version stamped on new local operations.
        synchronous: SQLite ``synchronous`` setting (ignored by the memory store).
        physical_clock: Milliseconds since the epoch for the HLC (tests inject one).
    """
    if path is None:
        async with open_memory_store(
            node_id=node_id, schema_version=schema_version, physical_clock=physical_clock
        ) as memory:
            yield memory
        return
    async with open_sqlite_store(
        str(path) if not isinstance(path, str) else path,
        node_id=node_id,
        schema_version=schema_version,
        synchronous=synchronous,
        physical_clock=physical_clock,
    ) as sqlite:
        yield sqlite
