"""Fixtures of the end-to-end tests: an in-process sync server on 127.0.0.1, port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from kora.server import MemoryServerStore, ServerLimits, SyncServer, open_server

#: Test limits: hypercorn's pings off (nothing idles long enough to need them).
TEST_LIMITS = ServerLimits(ping_interval=None, shutdown_timeout=3.0)

ServerFactory = Callable[..., AbstractAsyncContextManager[SyncServer]]


@asynccontextmanager
async def _running_server(**kwargs: Any) -> AsyncIterator[SyncServer]:
    kwargs.setdefault("limits", TEST_LIMITS)
    store = kwargs.pop("store", None)
    if store is None:
        async with (
            MemoryServerStore() as memory,
            open_server(store=memory, host="127.0.0.1", port=0, **kwargs) as server,
        ):
            yield server
    else:
        async with open_server(store=store, host="127.0.0.1", port=0, **kwargs) as server:
            yield server


@pytest.fixture
def start_server() -> ServerFactory:
    """``async with start_server(auth=..., limits=...) as server``: a fresh server per use."""
    return _running_server


@pytest.fixture
async def server() -> AsyncIterator[SyncServer]:
    """A server with a memory store, no auth and the test limits."""
    async with _running_server() as running:
        yield running
