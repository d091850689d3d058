"""Errors the local store raises (all in the ``KoraError`` hierarchy)."""

from __future__ import annotations

from kora.core.errors import BrokenError, LocalError

__all__ = [
    "RecordExistsError",
    "RecordNotFoundError",
    "StoreFailedError",
    "StoreVersionError",
]


class RecordNotFoundError(LocalError, LookupError):
    """An update or delete names a record that does not exist or is deleted."""


class RecordExistsError(LocalError):
    """An insert names a record id that already exists and is not deleted."""


class StoreVersionError(LocalError):
    """The database was written by a newer Kora (its store schema is unknown here), or
    belongs to another node than the one requested."""


class StoreFailedError(BrokenError):
    """SQLite failed underneath (disk full, I/O error, corruption): nothing was committed."""
