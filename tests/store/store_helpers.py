"""Opening stores of each kind for the contract suite, and a hand-driven physical clock."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from kora.store import Store, open_memory_store, open_sqlite_store

KINDS = ["memory", "sqlite"]
START_MS = 1_700_000_000_000


class ManualClock:
    """A physical clock in integer ms that moves only when told to."""

    def __init__(self, now: int = START_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


_counter = itertools.count()


@asynccontextmanager
async def open_kind(kind: str, directory: Path, **kwargs: Any) -> AsyncIterator[Store]:
    """Open a fresh store of ``kind`` ("memory" or "sqlite", in a new file of directory)."""
    if kind == "memory":
        async with open_memory_store(**kwargs) as memory:
            yield memory
    else:
        path = directory / f"store-{next(_counter)}.db"
        async with open_sqlite_store(str(path), **kwargs) as sqlite:
            yield sqlite
