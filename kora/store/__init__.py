"""The local store: the ``Store`` interface, ``SQLiteStore`` (default) and ``MemoryStore``.

Open one with ``async with open_store(path) as store`` (``None`` for memory).  The interface
and its guarantees are documented in ``kora.store.base``; docs/storage.md is the guide.
"""

from kora.store.base import MAX_WATERMARK_VIEWS, ChangeListener, Store
from kora.store.errors import (
    RecordExistsError,
    RecordNotFoundError,
    StoreFailedError,
    StoreVersionError,
)
from kora.store.memory import MemoryStore, open_memory_store
from kora.store.open import open_store
from kora.store.sqlite import SQLiteStore, open_sqlite_store
from kora.store.values import (
    ApplyResult,
    ChangeSet,
    Comparison,
    LocalMutation,
    Order,
    Record,
    RejectedOperation,
    RemoteRejection,
    StoreStatistics,
    Where,
)

__all__ = [
    "MAX_WATERMARK_VIEWS",
    "ApplyResult",
    "ChangeListener",
    "ChangeSet",
    "Comparison",
    "LocalMutation",
    "MemoryStore",
    "Order",
    "Record",
    "RecordExistsError",
    "RecordNotFoundError",
    "RejectedOperation",
    "RemoteRejection",
    "SQLiteStore",
    "Store",
    "StoreFailedError",
    "StoreStatistics",
    "StoreVersionError",
    "Where",
    "open_memory_store",
    "open_sqlite_store",
    "open_store",
]
