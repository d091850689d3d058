"""``open_server_store``: pick the store from one string, as ``kora serve --db`` does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from kora.server.stores.base import ServerStore
from kora.server.stores.memory import MemoryServerStore
from kora.server.stores.postgres import PostgresServerStore
from kora.server.stores.sqlite import SqliteServerStore

__all__ = ["create_server_store", "open_server_store"]

_POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def create_server_store(location: str | Path, *, node_id: str | None = None) -> ServerStore:
    """An unopened store for ``location`` (open it with ``async with``).

    Args:
        location: ``"memory:"`` for a ``MemoryServerStore``; a ``postgresql://`` or
            ``postgres://`` URL for a ``PostgresServerStore``; anything else is the path of a
            SQLite file (``"sqlite:"`` in front is allowed and stripped).
        node_id: The node id for a new store (see each store).
    """
    text = str(location)
    if text == "memory:":
        return MemoryServerStore(node_id=node_id)
    if text.startswith(_POSTGRES_PREFIXES):
        return PostgresServerStore(text, node_id=node_id)
    if text.startswith("sqlite:"):
        text = text.removeprefix("sqlite:")
    return SqliteServerStore(text, node_id=node_id)


@asynccontextmanager
async def open_server_store(
    location: str | Path, *, node_id: str | None = None
) -> AsyncIterator[ServerStore]:
    """``async with open_server_store("server.db") as store``; see ``create_server_store``."""
    async with create_server_store(location, node_id=node_id) as store:
        yield store
