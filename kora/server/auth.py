"""Auth providers: who a connecting client is and which scopes it is granted (spec 8.7).

A provider turns the handshake's ``authToken`` (``""`` when the client sent none) into an
``AuthContext``, or ``None`` to refuse the session (the session then answers ``AUTH_FAILED``
and closes).  The granted ``scopes`` are combined with the client's own ``syncScope`` by
``kora.server.scopes.resolve_scopes``, which only ever narrows them.

``scopes=None`` means the provider does not restrict the user (everything is visible);
``scopes={}`` means the user is granted no collection at all.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs

from kora.core.errors import LocalError
from kora.core.json_types import JsonValue
from kora.server.scopes import Scope

__all__ = [
    "AuthConfigError",
    "AuthContext",
    "AuthProvider",
    "MixedAuthProvider",
    "NoAuth",
    "TokenAuthProvider",
    "TokenFileAuthProvider",
]


class AuthConfigError(LocalError, ValueError):
    """An auth provider was configured wrongly (for example a malformed token file)."""


@attrs.frozen
class AuthContext:
    """The authenticated identity of a session.

    Attributes:
        user_id: Who the client is.  Anonymous users get a server-assigned random id.
        scopes: ``{collection: {field: value}}`` the user may read and write, or ``None`` for
            no restriction.  Treat the mappings as immutable.
        metadata: Anything else the provider wants the session (or a validator) to see.
        expires_at: When the token expires (Unix seconds, e.g. a JWT's ``exp``), or
            ``None``.  An open session asks the provider again at that moment, besides
            every ``ServerLimits.auth_revalidate_interval``.
    """

    user_id: str
    scopes: Scope | None = None
    metadata: Mapping[str, JsonValue] = attrs.field(factory=dict)
    expires_at: float | None = None


@runtime_checkable
class AuthProvider(Protocol):
    """Authenticates the token of a handshake."""

    async def authenticate(self, token: str) -> AuthContext | None:
        """Return the session's identity, or ``None`` to refuse it.

        Args:
            token: The handshake's ``authToken``, ``""`` if the client sent none.
        """
        ...


@attrs.frozen
class NoAuth:
    """Accepts everyone as ``anonymous``, unscoped (the reference ``NoAuthProvider``)."""

    async def authenticate(self, token: str) -> AuthContext | None:
        return AuthContext(user_id="anonymous")


@attrs.frozen
class TokenAuthProvider:
    """Delegates to an async ``validate(token) -> AuthContext | None`` (for JWTs, API keys...).

    ``validate`` runs on the event loop: if it does blocking work (a database lookup, a
    PBKDF2 hash), it should move that to a thread itself.
    """

    validate: Callable[[str], Awaitable[AuthContext | None]]

    async def authenticate(self, token: str) -> AuthContext | None:
        return await self.validate(token)


@attrs.frozen
class MixedAuthProvider:
    """Signed-in users through ``primary``; clients with no token as limited anonymous users.

    Only a *missing* (empty) token becomes anonymous: a token that ``primary`` rejects gives
    ``None`` (``AUTH_FAILED``), never a silent downgrade to anonymous, so an expired or forged
    token is reported as such (the reference falls back to anonymous here).

    Anonymous users get a fresh random ``user_id`` (``"<prefix>-<32 hex digits>"``), the
    ``anonymous_scopes`` for both reading and writing, and ``metadata={"anonymous": True}``.
    """

    primary: AuthProvider
    anonymous_scopes: Scope
    anonymous_prefix: str = "anon"

    async def authenticate(self, token: str) -> AuthContext | None:
        if token:
            return await self.primary.authenticate(token)
        return AuthContext(
            user_id=f"{self.anonymous_prefix}-{secrets.token_hex(16)}",
            scopes=self.anonymous_scopes,
            metadata={"anonymous": True},
        )


@attrs.frozen
class _TokenEntry:
    token: bytes
    context: AuthContext


@attrs.frozen
class TokenFileAuthProvider:
    """Static tokens, for ``kora serve --tokens FILE`` and tests.

    The file is a JSON object mapping each token to its user::

        {
          "s3cret-token-of-alice": {"user_id": "alice", "scopes": {"todos": {"owner": "alice"}}},
          "s3cret-token-of-admin": {"user_id": "admin"}
        }

    ``scopes`` is optional (absent or ``null``: unrestricted); ``metadata`` is an optional
    object.  Tokens are compared in constant time against every entry, so the response time
    does not reveal how much of a guess was right.  An empty token is always refused.
    """

    _entries: tuple[_TokenEntry, ...]

    @classmethod
    def from_mapping(cls, tokens: Mapping[str, Any]) -> TokenFileAuthProvider:
        """Build the provider from the decoded JSON object described above.

        Raises:
            AuthConfigError: The mapping is not in the documented format.
        """
        if not isinstance(tokens, Mapping):
            raise AuthConfigError("the token file must hold a JSON object {token: {...}}")
        entries = []
        for token, spec in tokens.items():
            if not isinstance(token, str) or not token:
                raise AuthConfigError("every token must be a non-empty string")
            entries.append(_TokenEntry(token.encode("utf-8"), _context_from_spec(spec)))
        return cls(tuple(entries))

    @classmethod
    def from_file(cls, path: str | Path) -> TokenFileAuthProvider:
        """Read the token file (UTF-8 JSON).  Call it at start-up, not on the event loop.

        Raises:
            AuthConfigError: The file cannot be read or is not in the documented format.
        """
        try:
            decoded = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AuthConfigError(f"cannot read the token file {path}: {exc}") from exc
        return cls.from_mapping(decoded)

    async def authenticate(self, token: str) -> AuthContext | None:
        if not token:
            return None
        candidate = token.encode("utf-8", "surrogatepass")
        found: AuthContext | None = None
        for entry in self._entries:  # no early exit: the time must not depend on the match
            if hmac.compare_digest(entry.token, candidate):
                found = entry.context
        return found


def _context_from_spec(spec: object) -> AuthContext:
    if not isinstance(spec, Mapping):
        raise AuthConfigError('every token must map to an object {"user_id": ..., ...}')
    unknown = set(spec) - {"user_id", "scopes", "metadata"}
    if unknown:
        raise AuthConfigError(f"unknown keys in a token entry: {sorted(unknown)}")
    user_id = spec.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise AuthConfigError('every token entry needs a non-empty "user_id" string')
    scopes = spec.get("scopes")
    if scopes is not None and not _is_scope(scopes):
        raise AuthConfigError(f'"scopes" of {user_id!r} must be {{collection: {{field: value}}}}')
    metadata = spec.get("metadata", {})
    if not isinstance(metadata, Mapping):
        raise AuthConfigError(f'"metadata" of {user_id!r} must be an object')
    return AuthContext(user_id=user_id, scopes=scopes, metadata=metadata)


def _is_scope(value: object) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(collection, str) and isinstance(fields, Mapping)
        for collection, fields in value.items()
    )
