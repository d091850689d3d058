"""A sync server inside the test's trio loop: real sessions, no sockets, virtual time.

``LoopServer`` runs the server's own :class:`kora.server.session.SyncSession` (handshake,
scopes, validation, delivery, acknowledgments: everything but hypercorn) over in-memory
connections.  With a ``MemoryServerStore`` nothing leaves the event loop, so a whole
client-server system runs under ``trio.testing.MockClock`` (the ``autojump_clock`` fixture)
and a seeded run is reproducible.

* ``server.connect`` is a :data:`kora.sync.TransportFactory`: pass it as
  ``SyncOptions(transport=server.connect)`` (wrap it in ``chaos_transport`` or a
  ``NetworkLink`` for faults);
* ``await server.restart()`` cuts every session and starts over on the same store with a
  fresh hub and rate limiter, as a new server process would;
* ``server.clock_ms`` is the server's wall clock, milliseconds since the epoch.  By default
  the system clock, like the apps' own (``open_app`` stamps operations with it); a
  simulation that gives its stores a virtual clock passes ``clock_ms=loop_clock_ms`` (or
  its own) so that both sides agree.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Final

import trio

from kora.core.hlc import system_clock_ms
from kora.server.auth import AuthProvider
from kora.server.config import ServerLimits
from kora.server.context import OperationSchema, ServerContext
from kora.server.session import SyncSession
from kora.server.stores.base import ServerStore
from kora.server.transport import CloseCode
from kora.server.transport import Frame as ServerFrame
from kora.server.transport import TransportClosed as ServerTransportClosed
from kora.sync.errors import TransportClosed
from kora.sync.memory import MemoryTransport, memory_transport_pair
from kora.sync.transport import Transport

__all__ = ["EPOCH_MS", "LoopServer", "open_loop_server"]

#: Wall-clock origin of loop servers (2024-01-01): ``clock_ms() = EPOCH_MS + 1000 * now``.
EPOCH_MS: Final = 1_704_067_200_000

#: Test limits: no pings, no rate limit (chaos makes clients resend a lot).
LOOP_LIMITS: Final = ServerLimits(ping_interval=None, ops_per_minute=0, shutdown_timeout=1.0)


def loop_clock_ms() -> int:
    """Milliseconds since the epoch on the trio clock (follows ``MockClock``)."""
    return EPOCH_MS + int(trio.current_time() * 1000)


class _ServerEnd:
    """The server side of a memory connection, as a ``FrameTransport``."""

    name = "memory"

    def __init__(self, end: MemoryTransport) -> None:
        self._end = end
        self.close_code: int | None = None

    async def receive(self) -> ServerFrame:
        try:
            return await self._end.receive()
        except TransportClosed as exc:
            raise ServerTransportClosed(CloseCode.ABNORMAL, str(exc)) from None

    async def send(self, frame: ServerFrame) -> None:
        try:
            await self._end.send(frame)
        except TransportClosed as exc:
            raise ServerTransportClosed(CloseCode.ABNORMAL, str(exc)) from None

    async def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
        self._end.close(f"server closed the connection ({code} {reason})")
        await trio.lowlevel.checkpoint()


class LoopServer:
    """See the module docstring.  Make one with :func:`open_loop_server`.

    Attributes:
        store: The server's store (kept across ``restart``).
        restarts: How many times ``restart`` ran.
        sessions_opened: Connections accepted so far.
    """

    def __init__(
        self,
        store: ServerStore,
        *,
        auth: AuthProvider | None,
        schema: OperationSchema | None,
        limits: ServerLimits,
        batch_size: int,
        clock_ms: Callable[[], int],
        capacity: int,
    ) -> None:
        self.store = store
        self._auth = auth
        self._schema = schema
        self._limits = limits
        self._batch_size = batch_size
        self.clock_ms = clock_ms
        self._capacity = capacity
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._generation: trio.CancelScope | None = None
        self._context: ServerContext | None = None
        self._down = False
        self._home: trio.Nursery | None = None  # where generations run (open_loop_server's)
        self.restarts = 0
        self.sessions_opened = 0

    @property
    def context(self) -> ServerContext:
        assert self._context is not None, "the loop server is not running"
        return self._context

    def _new_context(self) -> ServerContext:
        version = self._schema.version if self._schema is not None else 1
        return ServerContext(
            store=self.store,
            auth=self._auth,
            schema=self._schema,
            schema_range=(version, version),
            batch_size=self._batch_size,
            limits=self._limits,
            allowed_origins=None,
        )

    async def _run_generation(self, *, task_status: trio.TaskStatus[None]) -> None:
        ctx = self._context = self._new_context()
        with trio.CancelScope() as scope:
            self._generation = scope
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(partial(ctx.hub.follow_store, ctx.store.wait_for_new))
                task_status.started()
                await trio.sleep_forever()

    async def _serve_connection(self, end: MemoryTransport) -> None:
        session_id = f"loop-{next(self._ids)}"
        ctx = self.context
        transport = _ServerEnd(end)
        if not ctx.sessions.try_register(session_id, "memory"):
            end.close("max connections reached")
            return
        self.sessions_opened += 1
        try:
            await SyncSession(ctx, transport, session_id=session_id, clock_ms=self.clock_ms).run()
        except ServerTransportClosed:
            pass
        finally:
            ctx.sessions.unregister(session_id)
            end.close("session ended")

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Transport]:
        """A new client connection (a ``TransportFactory``)."""
        if self._down or self._nursery is None:
            await trio.lowlevel.checkpoint()
            raise TransportClosed("loop server is down")
        client, server_end = memory_transport_pair(self._capacity)
        self._nursery.start_soon(self._serve_connection, server_end)
        try:
            yield client
        finally:
            client.close("client closed the connection")

    async def stop(self) -> None:
        """Crash: every session ends at once; new connections are refused until ``start``."""
        self._down = True
        if self._generation is not None:
            self._generation.cancel()
        self._generation = None
        self._nursery = None
        await trio.lowlevel.checkpoint()

    async def start(self) -> None:
        """Start (again) with a fresh context (hub, rate limiter) over the same store."""
        assert self._home is not None, "use open_loop_server()"
        await self._home.start(self._run_generation)
        self._down = False

    async def restart(self) -> None:
        """``stop`` then ``start``: what a server process restart does to its clients."""
        await self.stop()
        await self.start()
        self.restarts += 1


@asynccontextmanager
async def open_loop_server(
    store: ServerStore,
    *,
    auth: AuthProvider | None = None,
    schema: OperationSchema | None = None,
    limits: ServerLimits = LOOP_LIMITS,
    batch_size: int = 100,
    clock_ms: Callable[[], int] = system_clock_ms,
    capacity: int = 64,
) -> AsyncIterator[LoopServer]:
    """Run a :class:`LoopServer` on an open ``store`` for the ``async with`` block."""
    server = LoopServer(
        store,
        auth=auth,
        schema=schema,
        limits=limits,
        batch_size=batch_size,
        clock_ms=clock_ms,
        capacity=capacity,
    )
    async with trio.open_nursery() as nursery:
        server._home = nursery
        await server.start()
        try:
            yield server
        finally:
            await server.stop()
            nursery.cancel_scope.cancel()
