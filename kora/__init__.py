"""Kora for Python: an offline-first sync runtime on trio that speaks the Kora sync protocol.

The public API: ``open_app`` and what it gives (``App``, collections, queries, watches,
transactions, events), the schema builders, and the error hierarchy.  Lower layers
(``kora.core``, ``kora.store`` ...) stay importable for advanced use.

Modules of kora's lower layers must not import this root package (use ``kora._version`` for
the version): it re-exports ``kora.app``, the top of the layer stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the lazy names below, typed for mypy and editors
    from kora.app import App as App
    from kora.app import AppStatistics as AppStatistics
    from kora.app import Collection as Collection
    from kora.app import Event as Event
    from kora.app import EventBus as EventBus
    from kora.app import EventSubscription as EventSubscription
    from kora.app import Lagged as Lagged
    from kora.app import Overflow as Overflow
    from kora.app import Query as Query
    from kora.app import QueryError as QueryError
    from kora.app import Transaction as Transaction
    from kora.app import TransactionCollection as TransactionCollection
    from kora.app import Watch as Watch
    from kora.app import open_app as open_app
    from kora.sync import SyncOptions as SyncOptions

from kora._version import __version__ as __version__
from kora.core.errors import BrokenError as BrokenError
from kora.core.errors import ClosedError as ClosedError
from kora.core.errors import KoraError as KoraError
from kora.core.errors import LocalError as LocalError
from kora.core.errors import RemoteError as RemoteError
from kora.core.errors import SchemaValidationError as SchemaValidationError
from kora.core.errors import ValidationError as ValidationError
from kora.core.operation import AtomicOp as AtomicOp
from kora.core.operation import AtomicOpType as AtomicOpType
from kora.core.operation import Operation as Operation
from kora.core.schema import Schema as Schema
from kora.core.schema import array as array
from kora.core.schema import boolean as boolean
from kora.core.schema import bytes_ as bytes_
from kora.core.schema import define_schema as define_schema
from kora.core.schema import enum as enum
from kora.core.schema import integer as integer
from kora.core.schema import json as json
from kora.core.schema import number as number
from kora.core.schema import string as string
from kora.core.schema import timestamp as timestamp
from kora.store import Record as Record
from kora.store import RecordExistsError as RecordExistsError
from kora.store import RecordNotFoundError as RecordNotFoundError
from kora.store import RejectedOperation as RejectedOperation
from kora.store import StoreFailedError as StoreFailedError
from kora.store import StoreVersionError as StoreVersionError

__all__ = [
    "App",
    "AppStatistics",
    "AtomicOp",
    "AtomicOpType",
    "BrokenError",
    "ClosedError",
    "Collection",
    "Event",
    "EventBus",
    "EventSubscription",
    "KoraError",
    "Lagged",
    "LocalError",
    "Operation",
    "Overflow",
    "Query",
    "QueryError",
    "Record",
    "RecordExistsError",
    "RecordNotFoundError",
    "RejectedOperation",
    "RemoteError",
    "Schema",
    "SchemaValidationError",
    "StoreFailedError",
    "StoreVersionError",
    "SyncOptions",
    "Transaction",
    "TransactionCollection",
    "ValidationError",
    "Watch",
    "__version__",
    "array",
    "boolean",
    "bytes_",
    "define_schema",
    "enum",
    "integer",
    "json",
    "number",
    "open_app",
    "string",
    "timestamp",
]


# The names of kora.app and kora.sync are resolved on first access (PEP 562): importing a
# pure layer such as kora.core or kora.protocol (which imports this package first) then does
# not load trio, the store and the sync engine as well.
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        [
            "App",
            "AppStatistics",
            "Collection",
            "Event",
            "EventBus",
            "EventSubscription",
            "Lagged",
            "Overflow",
            "Query",
            "QueryError",
            "Transaction",
            "TransactionCollection",
            "Watch",
            "open_app",
        ],
        "kora.app",
    ),
    "SyncOptions": "kora.sync",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kora' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
