"""Running the sync server: ``open_server`` (an async context manager) and ``serve``.

The server is one hypercorn trio worker serving ``SyncApp`` on one port, plus two
background tasks in the same nursery: the hub's store follower (commits made by other
processes sharing a PostgreSQL database) and the long-poll sessions.

Graceful shutdown (leaving ``open_server``, ``serve``'s ``shutdown_trigger``, Ctrl-C in
``kora serve``): hypercorn stops accepting; every session finishes the batch it is handling,
sends its acknowledgment and closes with 1001; long-poll sessions do the same and their
pending polls are answered; after ``limits.shutdown_timeout`` whatever is left is cancelled.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Final
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from kora.server.app import SyncApp
from kora.server.auth import AuthProvider
from kora.server.config import DEFAULT_PORT, ServerLimits
from kora.server.context import OperationSchema, ServerContext
from kora.server.logs import fields, get_logger
from kora.server.long_poll import LongPollEndpoints
from kora.server.session import SyncSession
from kora.server.stores.base import ServerStore
from kora.server.transport import CloseCode, FrameTransport

__all__ = ["SyncServer", "open_server", "serve"]

log = get_logger(__name__)

_DEFAULT_LIMITS: Final = ServerLimits()


class SyncServer:
    """A running sync server (what ``open_server`` yields and ``serve`` reports as started).

    Attributes:
        host: The address bound.
        port: The port bound (the real one when 0 was asked for).
        url: ``ws://host:port/``, what clients connect to.
        http_url: ``http://host:port``, for ``/health``, ``/metrics`` and long-polling.
    """

    def __init__(self, ctx: ServerContext, *, host: str, port: int) -> None:
        self._ctx = ctx
        self.host = host
        self.port = port
        self._stopped = trio.Event()
        self._long_poll = LongPollEndpoints(ctx, self._run_session)
        self.app = SyncApp(ctx, self._long_poll, self._run_session)

    @property
    def context(self) -> ServerContext:
        return self._ctx

    @property
    def url(self) -> str:
        return f"ws://{_url_host(self.host)}:{self.port}/"

    @property
    def http_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    @property
    def session_count(self) -> int:
        return len(self._ctx.sessions)

    def shutdown(self) -> None:
        """Start a graceful shutdown (returns at once; ``wait_stopped`` waits for the end)."""
        self._ctx.shutdown.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _run_session(self, transport: FrameTransport, session_id: str) -> None:
        try:
            await SyncSession(self._ctx, transport, session_id=session_id).run()
        except Exception:
            # Fault isolation: a bug in one session closes that session, nothing else.
            log.exception("session crashed", extra=fields(session=session_id))
            await transport.close(CloseCode.INTERNAL_ERROR, "internal error")

    async def _serve_http(
        self, cancel_scope: trio.CancelScope, *, task_status: trio.TaskStatus[list[str]]
    ) -> None:
        with cancel_scope:
            await hypercorn_serve(
                self.app,  # type: ignore[arg-type]
                self._hypercorn_config(),
                shutdown_trigger=self._ctx.shutdown.wait,
                task_status=task_status,
            )

    def _hypercorn_config(self) -> HypercornConfig:
        limits = self._ctx.limits
        config = HypercornConfig()
        config.bind = [f"{_url_host(self.host)}:{self.port}"]
        config.websocket_max_message_size = limits.max_message_bytes
        config.websocket_ping_interval = limits.ping_interval
        # Any byte from the peer (pongs included) resets this: dead peers are dropped.
        config.read_timeout = limits.idle_timeout  # type: ignore[assignment]
        config.graceful_timeout = limits.shutdown_timeout
        config.keep_alive_timeout = 5.0
        config.accesslog = None
        config.errorlog = get_logger("hypercorn")
        config.include_server_header = False
        return config

    async def run(
        self, *, task_status: trio.TaskStatus[SyncServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until ``shutdown()`` (then stop gracefully) or cancellation."""
        ctx = self._ctx
        try:
            # The hub learns what the store already holds before anyone can connect: with an
            # empty window and no maximum, a session would read "end of the log" from it and
            # tell a client it is synced while the store holds operations it lacks.
            ctx.hub.publish(await ctx.store.max_delivery_sequence())
            async with trio.open_nursery() as background:
                background.start_soon(partial(ctx.hub.follow_store, ctx.store.wait_for_new))
                # The hub follower runs until cancelled; the services stop after a shutdown.
                async with trio.open_nursery() as services:
                    await services.start(self._long_poll.serve)
                    http_scope = trio.CancelScope()
                    binds: list[str] = await services.start(self._serve_http, http_scope)
                    port = urlsplit(binds[0]).port if binds else None
                    if port is not None:
                        self.port = port
                    log.info("sync server listening", extra=fields(url=self.url))
                    task_status.started(self)
                    await ctx.shutdown.wait()
                    # Sessions finish their batch and close with 1001 by themselves.  Then
                    # hypercorn is stopped outright: what it would still wait for are idle
                    # keep-alive sockets and its ping tasks (which sleep a whole ping
                    # interval after their connection closed).
                    with trio.move_on_after(ctx.limits.shutdown_timeout):
                        await ctx.sessions.wait_empty()
                    http_scope.cancel()
                background.cancel_scope.cancel()
        finally:
            self._stopped.set()
            log.info("sync server stopped")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _build_context(
    *,
    store: ServerStore,
    auth: AuthProvider | None,
    schema: OperationSchema | None,
    schema_versions: tuple[int, int] | None,
    batch_size: int,
    limits: ServerLimits,
    allowed_origins: Sequence[str] | None,
) -> ServerContext:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if schema_versions is None:
        version = schema.version if schema is not None else 1
        schema_versions = (version, version)
    low, high = schema_versions
    if not 1 <= low <= high:
        raise ValueError(
            f"schema_versions must be (min, max) with 1 <= min <= max, got {schema_versions}"
        )
    return ServerContext(
        store=store,
        auth=auth,
        schema=schema,
        schema_range=(low, high),
        batch_size=batch_size,
        limits=limits,
        allowed_origins=frozenset(allowed_origins) if allowed_origins is not None else None,
    )


@asynccontextmanager
async def open_server(
    *,
    store: ServerStore,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    auth: AuthProvider | None = None,
    schema: OperationSchema | None = None,
    schema_versions: tuple[int, int] | None = None,
    batch_size: int = 100,
    limits: ServerLimits = _DEFAULT_LIMITS,
    allowed_origins: Sequence[str] | None = None,
) -> AsyncIterator[SyncServer]:
    """Run a sync server for the duration of the ``async with`` block.

    The store must already be open (``async with SqliteServerStore(path) as store``); the
    server does not close it.  Leaving the block shuts the server down gracefully.

    Args:
        store: The operation log.
        host: Address to bind (loopback by default).
        port: Port to bind; 0 picks a free one (see ``server.port`` / ``server.url``).
        auth: Auth provider; ``None`` accepts every client, unscoped.
        schema: Optional app schema: its ``version`` sets the supported schema version and
            its ``validate_operation`` checks every incoming operation.
        schema_versions: Supported client schema versions ``(min, max)``, inclusive;
            default ``(schema.version, schema.version)``, or ``(1, 1)`` without a schema.
        batch_size: Operations per outgoing batch.
        limits: Limits and timeouts.
        allowed_origins: Origin allow-list for browsers (``None``: no check).

    Yields:
        The running ``SyncServer``.
    """
    ctx = _build_context(
        store=store,
        auth=auth,
        schema=schema,
        schema_versions=schema_versions,
        batch_size=batch_size,
        limits=limits,
        allowed_origins=allowed_origins,
    )
    server = SyncServer(ctx, host=host, port=port)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        try:
            yield server
        finally:
            server.shutdown()


async def serve(
    *,
    store: ServerStore,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    auth: AuthProvider | None = None,
    schema: OperationSchema | None = None,
    schema_versions: tuple[int, int] | None = None,
    batch_size: int = 100,
    limits: ServerLimits = _DEFAULT_LIMITS,
    allowed_origins: Sequence[str] | None = None,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    task_status: trio.TaskStatus[SyncServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a sync server until ``shutdown_trigger`` returns (then shut down gracefully).

    Same arguments as ``open_server``; ``task_status.started`` reports the ``SyncServer``
    (so ``server = await nursery.start(partial(serve, store=...))``).  Without a trigger it
    serves until cancelled.
    """
    ctx = _build_context(
        store=store,
        auth=auth,
        schema=schema,
        schema_versions=schema_versions,
        batch_size=batch_size,
        limits=limits,
        allowed_origins=allowed_origins,
    )
    server = SyncServer(ctx, host=host, port=port)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        task_status.started(server)
        if shutdown_trigger is None:
            await trio.sleep(math.inf)
        else:
            await shutdown_trigger()
        server.shutdown()
