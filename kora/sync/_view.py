"""The adopted sync scope and the view signature its delivery watermark is stored under."""

from __future__ import annotations

import json
from collections.abc import Mapping

from kora.core.json_types import JsonValue
from kora.protocol.messages import ScopeMap

__all__ = ["ScopeMemo", "view_signature"]


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
    not reset our delivery watermark (spec 4.4) and we resume where we were.
    """

    def __init__(self) -> None:
        self.scope: Mapping[str, Mapping[str, JsonValue]] | None = None
