"""Fixtures of the sync engine's tests: a store with an engine on a memory network."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from sync_fakes import Harness, HarnessFactory

from kora.store import Store, open_store
from kora.sync import MemoryNetwork, SyncOptions, open_sync


@asynccontextmanager
async def _harness(
    network: MemoryNetwork | None = None, store: Store | None = None, **options: Any
) -> AsyncIterator[Harness]:
    network = network or MemoryNetwork()
    events: list[tuple[str, dict[str, object]]] = []
    options.setdefault("url", "memory://")
    options.setdefault("transport", network)
    sync_options = SyncOptions(**options)

    def emit(name: str, payload: object) -> None:
        assert isinstance(payload, dict) or hasattr(payload, "items")
        events.append((name, dict(payload)))  # type: ignore[call-overload]

    async with (
        open_store(None) if store is None else _existing(store) as opened,
        open_sync(opened, sync_options, emit=emit) as engine,
    ):
        yield Harness(opened, engine, network, events)


@asynccontextmanager
async def _existing(store: Store) -> AsyncIterator[Store]:
    await trio.lowlevel.checkpoint()
    yield store


@pytest.fixture
def harness() -> HarnessFactory:
    """``async with harness(network=..., **sync_options) as h``."""
    return _harness
