"""The pytest plugin registered under the ``pytest11`` entry point (``kora``).

Fixtures for apps built on Kora (see docs/testing.md):

* ``kora_server``: a real sync server (hypercorn) on 127.0.0.1, a free port, memory store;
* ``kora_sqlite_server``: the same with a SQLite store in ``tmp_path``;
* ``kora_loop_server``: the server's sessions inside the test's trio loop, over memory
  connections, so everything works under the ``autojump_clock`` fixture;
* ``kora_app``: ``async with kora_app(schema, chaos=..., seed=...) as app`` opens an app
  connected to ``kora_loop_server`` (``partition(app)`` cuts it off);
* ``kora_websocket_app``: the same against ``kora_server`` over WebSocket (or
  ``transport="long-polling"``).

Importing this module must stay cheap: pytest loads it in every project that has kora-sync
installed, so everything heavy is imported inside the fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kora.server import SyncServer
    from kora.testing.loop_server import LoopServer


def _limits() -> Any:
    """Server limits of the fixtures: pings off (nothing idles long enough to need them),
    no rate limit (chaos makes clients resend), quick shutdown."""
    from kora.server import ServerLimits

    return ServerLimits(ping_interval=None, ops_per_minute=0, shutdown_timeout=3.0)


@pytest.fixture
async def kora_server() -> AsyncIterator[SyncServer]:
    """A sync server on 127.0.0.1 (free port) with a memory store and no auth."""
    from kora.server import MemoryServerStore, open_server

    async with (
        MemoryServerStore() as store,
        open_server(store=store, port=0, limits=_limits()) as server,
    ):
        yield server


@pytest.fixture
async def kora_sqlite_server(tmp_path: Path) -> AsyncIterator[SyncServer]:
    """A sync server on 127.0.0.1 with a SQLite store in ``tmp_path``."""
    from kora.server import SqliteServerStore, open_server

    async with (
        SqliteServerStore(tmp_path / "kora-server.db") as store,
        open_server(store=store, port=0, limits=_limits()) as server,
    ):
        yield server


@pytest.fixture
async def kora_loop_server() -> AsyncIterator[LoopServer]:
    """The server's sessions in the test's trio loop (memory store; virtual-time safe)."""
    from kora.server import MemoryServerStore
    from kora.testing.loop_server import open_loop_server

    async with MemoryServerStore() as store, open_loop_server(store) as server:
        yield server


@pytest.fixture
def kora_app(kora_loop_server: LoopServer) -> Any:
    """``async with kora_app(schema, **options) as app``: an app on ``kora_loop_server``.

    Options are those of ``kora.testing.apps.open_test_app`` (``chaos``, ``seed``,
    ``path``, ``connect``, and any ``SyncOptions`` field).
    """
    from functools import partial

    from kora.testing.apps import open_test_app

    return partial(open_test_app, server=kora_loop_server)


@pytest.fixture
def kora_websocket_app(kora_server: SyncServer) -> Any:
    """``async with kora_websocket_app(schema, **options) as app``: an app on
    ``kora_server`` over WebSocket (``transport="long-polling"`` for long-polling)."""
    from functools import partial

    from kora.testing.apps import open_test_app

    return partial(open_test_app, server=kora_server)
