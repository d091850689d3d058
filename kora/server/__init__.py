"""The sync server: ASGI app on hypercorn, sessions, hub, server stores, auth, scopes.

Start one with ``async with kora.server.open_server(store=...) as server`` (or
``await nursery.start(partial(kora.server.serve, store=...))``), or ``kora serve`` on the
command line.  See docs/server.md.
"""

from kora.server.auth import (
    AuthContext,
    AuthProvider,
    MixedAuthProvider,
    NoAuth,
    TokenAuthProvider,
    TokenFileAuthProvider,
)
from kora.server.config import DEFAULT_PORT, ServerLimits
from kora.server.server import SyncServer, open_server, serve
from kora.server.stores import (
    MemoryServerStore,
    PostgresServerStore,
    ServerStore,
    SqliteServerStore,
    open_server_store,
)

__all__ = [
    "DEFAULT_PORT",
    "AuthContext",
    "AuthProvider",
    "MemoryServerStore",
    "MixedAuthProvider",
    "NoAuth",
    "PostgresServerStore",
    "ServerLimits",
    "ServerStore",
    "SqliteServerStore",
    "SyncServer",
    "TokenAuthProvider",
    "TokenFileAuthProvider",
    "open_server",
    "open_server_store",
    "serve",
]
