"""Errors of the sync engine, in the one hierarchy of ``kora.core.errors``.

* :class:`TransportClosed` (a ``BrokenError``): the connection went away under us.
* :class:`AuthFailedError` and :class:`SchemaMismatchError` (``RemoteError``): the server
  refused us; neither is retried automatically.
* :class:`ConnectionEnded`: how a connection's actors report *why* their connection is over;
  the reconnect scheduler reads it to decide what comes next.
"""

from __future__ import annotations

from kora.core.errors import BrokenError, LocalError, RemoteError

__all__ = [
    "AuthFailedError",
    "ConnectionEnded",
    "SchemaMismatchError",
    "SyncConfigurationError",
    "SyncFailedError",
    "TransportClosed",
]


class TransportClosed(BrokenError):
    """The transport is closed: the peer or the network ended it, or it was closed here.

    Attributes:
        reason: Human-readable reason, e.g. ``"WebSocket closed with code 1006"``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SyncConfigurationError(LocalError, ValueError):
    """``SyncOptions`` hold a value the engine cannot work with."""


class AuthFailedError(RemoteError):
    """The server refused our credentials (``error`` with code ``AUTH_FAILED``)."""


class SchemaMismatchError(RemoteError):
    """The server does not support our schema version (a rejected handshake)."""


class ConnectionEnded(Exception):
    """Raised by a connection's actor to end the whole connection (internal signal).

    It is an ``Exception`` (not a ``KoraError``) on purpose: it never reaches users; the
    reconnect scheduler turns it into status, events and the next step.

    Attributes:
        reason: Why, for ``sync:disconnected`` and logs.
        retry: Whether the scheduler may reconnect automatically.
        fatal: The engine goes to ``error`` (schema mismatch, clock blocked).
        auth_failed: The server refused our credentials.
    """

    def __init__(
        self, reason: str, *, retry: bool = True, fatal: bool = False, auth_failed: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.fatal = fatal
        self.auth_failed = auth_failed


class SyncFailedError(RemoteError):
    """The engine is in ``error``: a problem automatic retries cannot fix."""
