"""The adopted sync scope and the view signature its delivery watermark is stored under."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Final

from kora.protocol.messages import ScopeMap
from kora.store import Store

__all__ = ["SCOPE_META_KEY", "ScopeMemo", "decode_scope", "view_signature"]

log: Final = logging.getLogger("kora.sync")

#: The store meta key under which the adopted scope is kept.
SCOPE_META_KEY: Final = "kora.sync.accepted_scope"


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(key): _plain(member) for key, member in value.items()}
    return value


def view_signature(scope: ScopeMap | None) -> str:
    """``""`` without a scope, else a stable JSON of ``{scope, subsets}`` (spec 4.4)."""
    if scope is None:
        return ""
    return json.dumps(
        {"scope": _plain(scope), "subsets": []}, sort_keys=True, separators=(",", ":")
    )


class ScopeMemo:
    """The scope the server granted last (``acceptedScope``), asked for again next time.

    Adopting it means the next handshake sends the same ``syncScope``, so the server does
    not reset our delivery watermark (spec 4.4) and we resume where we were.  It is kept in
    the store's meta (``SCOPE_META_KEY``), so this holds after a restart too: the first
    handshake of a new process asks for the scope of the last one, with that view's
    watermark, instead of downloading everything again.
    """

    def __init__(self, scope: ScopeMap | None = None) -> None:
        self.scope = scope

    @classmethod
    async def load(cls, store: Store) -> ScopeMemo:
        """The memo of the scope ``store`` keeps (an unreadable one counts as none)."""
        return cls(decode_scope(await store.get_meta(SCOPE_META_KEY)))

    async def adopt(self, store: Store, scope: ScopeMap | None) -> None:
        """Remember ``scope``, durably when it changed."""
        if view_signature(scope) != view_signature(self.scope):
            await store.set_meta(SCOPE_META_KEY, None if scope is None else _encode(scope))
        self.scope = scope


def _encode(scope: ScopeMap) -> str:
    return json.dumps(_plain(scope), sort_keys=True, separators=(",", ":"))


def decode_scope(text: str | None) -> ScopeMap | None:
    """The scope ``ScopeMemo`` stored, or None (nothing stored, or not a scope map)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(collection, str) and isinstance(fields, dict)
        for collection, fields in value.items()
    ):
        log.warning("ignored a stored sync scope that is not a scope map: %.200r", text)
        return None
    return value
