"""Everything the sessions of one server share: store, hub, auth, limits, metrics, shutdown."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

import attrs
import trio

from kora.core.operation import Operation
from kora.protocol.shared_encoding import SharedEncodings
from kora.server.auth import AuthProvider
from kora.server.config import ServerLimits
from kora.server.hub import Hub
from kora.server.metrics import ServerMetrics
from kora.server.rate_limit import OperationRateLimiter
from kora.server.stores.base import ServerStore

__all__ = ["OperationSchema", "ServerContext", "SessionRegistry"]


class OperationSchema(Protocol):
    """What the server needs from an app schema: its version and an operation check."""

    @property
    def version(self) -> int: ...

    def validate_operation(self, op: Operation) -> None:
        """Raise ``ValueError`` (``kora.core.ValidationError``) if ``op`` does not fit."""
        ...


class SessionRegistry:
    """Open sessions by id, with the connection cap applied at registration."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._sessions: dict[str, str] = {}
        self._emptied = trio.Event()

    def try_register(self, session_id: str, transport: str) -> bool:
        """Reserve a slot; False when the server is full (``max_connections`` 0: no cap)."""
        if self.max_connections and len(self._sessions) >= self.max_connections:
            return False
        self._sessions[session_id] = transport
        return True

    def unregister(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        if not self._sessions:
            self._emptied.set()
            self._emptied = trio.Event()

    async def wait_empty(self) -> None:
        """Return once no session is registered (at once if none is)."""
        while self._sessions:
            await self._emptied.wait()

    def __len__(self) -> int:
        return len(self._sessions)

    def count(self, transport: str) -> int:
        return sum(1 for t in self._sessions.values() if t == transport)


@attrs.define(kw_only=True, eq=False)
class ServerContext:
    """Shared state of one running server (one per ``open_server``)."""

    store: ServerStore
    auth: AuthProvider | None
    schema: OperationSchema | None
    schema_range: tuple[int, int]
    batch_size: int
    limits: ServerLimits
    allowed_origins: frozenset[str] | None
    hub: Hub = attrs.field(factory=Hub)
    #: Operations encoded once for every session that relays them (``kora.protocol``).
    encodings: SharedEncodings = attrs.field(factory=SharedEncodings)
    shutdown: trio.Event = attrs.field(factory=trio.Event)
    started_monotonic: float = attrs.field(factory=time.monotonic)
    metrics: ServerMetrics = attrs.field(init=False)
    sessions: SessionRegistry = attrs.field(init=False)
    rate_limiter: OperationRateLimiter = attrs.field(init=False)
    long_poll_queue_depth: int = 0

    def __attrs_post_init__(self) -> None:
        self.sessions = SessionRegistry(self.limits.max_connections)
        self.rate_limiter = OperationRateLimiter(
            per_minute=self.limits.ops_per_minute,
            burst=self.limits.ops_burst,
            clock=trio.current_time,
        )
        self.metrics = ServerMetrics(uptime=self.uptime, queue_depths=self._queue_depths)

    def uptime(self) -> float:
        return time.monotonic() - self.started_monotonic

    def _queue_depths(self) -> dict[tuple[str, ...], float]:
        return {
            ("hub_wakeups",): float(self.hub.pending_wakeups()),
            ("long_poll_frames",): float(self.long_poll_queue_depth),
        }

    def origin_allowed(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """The Origin allow-list: requests without an Origin (non-browsers) always pass."""
        if self.allowed_origins is None:
            return True
        for name, value in headers:
            if name.lower() == b"origin":
                return value.decode("latin-1") in self.allowed_origins
        return True
