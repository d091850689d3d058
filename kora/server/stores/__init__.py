"""Server stores: the operation log, delivery order and materialized records of a server.

``ServerStore`` is the contract (see ``kora.server.stores.base``); ``MemoryServerStore``,
``SqliteServerStore`` (the default of ``kora serve``) and ``PostgresServerStore`` (several
server processes on one database) implement it, and one contract test suite covers all three.
"""

from kora.server.stores.base import (
    Admit,
    AppendResult,
    AppendStatus,
    DeliveredOperation,
    OperationOutcome,
    ServerStore,
    ServerStoreError,
)
from kora.server.stores.memory import MemoryServerStore, open_memory_server_store
from kora.server.stores.open import create_server_store, open_server_store
from kora.server.stores.postgres import PostgresServerStore, open_postgres_server_store
from kora.server.stores.sqlite import SqliteServerStore, open_sqlite_server_store

__all__ = [
    "Admit",
    "AppendResult",
    "AppendStatus",
    "DeliveredOperation",
    "MemoryServerStore",
    "OperationOutcome",
    "PostgresServerStore",
    "ServerStore",
    "ServerStoreError",
    "SqliteServerStore",
    "create_server_store",
    "open_memory_server_store",
    "open_postgres_server_store",
    "open_server_store",
    "open_sqlite_server_store",
]
