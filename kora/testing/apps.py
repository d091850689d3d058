"""Apps connected to a test server, and waiting for them to converge.

``open_test_app(schema, server)`` opens an app (``kora.open_app``, an in-memory store by
default) whose sync goes through a :class:`~kora.testing.network.NetworkLink` (so
``partition(app)`` works) and, if asked, a :func:`~kora.testing.chaos.chaos_transport`.  The
server is either a :class:`~kora.testing.loop_server.LoopServer` (memory connections; works
under ``autojump_clock``) or a running :class:`kora.server.SyncServer` (WebSocket or
long-polling on loopback).  The app is connected when the block starts.

``wait_converged(*apps)`` waits until every app has an empty outbound queue and all hold the
same records (canonical dumps equal).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import trio

from kora.app import App, open_app
from kora.core.schema import Schema
from kora.server.server import SyncServer
from kora.sync.engine import transport_factory
from kora.sync.options import SyncOptions
from kora.sync.transport import TransportFactory
from kora.testing.chaos import ChaosConfig, chaos_transport
from kora.testing.loop_server import LoopServer
from kora.testing.network import NetworkLink, register_link
from kora.testing.replicas import app_store, store_dump

__all__ = ["FAST_RECONNECT", "open_test_app", "wait_converged"]

#: Sync options that keep tests quick: short reconnect delays and timeouts.
FAST_RECONNECT: dict[str, Any] = {
    "reconnect_interval": 0.1,
    "max_reconnect_interval": 1.0,
    "ack_timeout": 5.0,
    "connect_timeout": 5.0,
    "poll_interval": 0.02,
}


@asynccontextmanager
async def open_test_app(
    schema: Schema,
    server: LoopServer | SyncServer,
    *,
    path: str | os.PathLike[str] | None = None,
    transport: Literal["memory", "websocket", "long-polling"] | None = None,
    chaos: ChaosConfig | None = None,
    seed: int = 0,
    connect: bool = True,
    **sync_options: Any,
) -> AsyncIterator[App]:
    """An app syncing with ``server`` for the duration of the block (see the module).

    Args:
        schema: The app's schema.
        server: A ``LoopServer`` (memory) or a running ``SyncServer``.
        path: The store (``None``: a ``MemoryStore``; a file path: SQLite).
        transport: ``"memory"`` for a loop server (the default there); ``"websocket"``
            (default for a ``SyncServer``) or ``"long-polling"``.
        chaos: Frame faults between the app and the server.
        seed: Seed of the chaos.
        connect: Call ``app.sync.connect()`` before the block starts.
        **sync_options: More ``SyncOptions`` (override ``FAST_RECONNECT``).
    """
    options: dict[str, Any] = {**FAST_RECONNECT, **sync_options}
    inner: TransportFactory
    if isinstance(server, LoopServer):
        if transport not in (None, "memory"):
            raise ValueError("a LoopServer only serves memory connections")
        url = "memory://"
        inner = server.connect
    else:
        choice = transport or "websocket"
        if choice not in ("websocket", "long-polling"):
            raise ValueError(f"a SyncServer is reached by websocket or long-polling, not {choice}")
        url = server.url
        inner = transport_factory(SyncOptions(url=url, transport=choice, **options))
    if chaos is not None:
        inner = chaos_transport(inner, chaos, seed=seed)
    link = NetworkLink(inner)
    async with open_app(schema, path, sync=SyncOptions(url=url, transport=link, **options)) as app:
        register_link(app, link)
        assert app.sync is not None
        if connect:
            await app.sync.connect()
        yield app


async def wait_converged(*apps: App, poll: float = 0.05) -> None:
    """Wait until every app's queue is empty and all hold the same records.

    Bound the wait yourself: ``with trio.fail_after(60): await wait_converged(a, b)``
    (trio time, so virtual seconds under ``autojump_clock``).
    """
    while True:
        if all([await app.pending_operations() == 0 for app in apps]):
            dumps = [await store_dump(app_store(app), app.schema.collections) for app in apps]
            if all(dump == dumps[0] for dump in dumps):
                return
        await trio.sleep(poll)
