"""Scopes: which records a session may read and write (spec 8.6, reliability 5.3).

A scope is ``{collection: {field: value}}``.  A session may see and write a record of
``collection`` only if the collection is in the scope and every listed field of the record
equals the listed value.  ``{}`` as a collection's filter grants the whole collection.

Two values mean different things and must not be confused:

* ``None``: the session is *unscoped* and sees everything (no auth scopes, no client filter);
* ``{}`` (an empty mapping): the session is scoped to *no* collection and sees nothing.

Unlike the reference server, resolution here *intersects*: the client's handshake scope can
only narrow what the auth provider grants, never add a collection or override a granted value
(the reference merges both and lets a client ask for collections it was never granted).

Every function here is pure and synchronous: the session calls them per operation, and the
server stores call the write check inside their append transaction (``admit=``), in a worker
thread.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TypeAlias

from kora.core.json_types import JsonValue
from kora.core.operation import Operation, OpType

__all__ = [
    "Scope",
    "operation_visible",
    "resolve_scopes",
    "scope_differs",
    "scope_json",
    "scope_values_equal",
    "write_allowed",
]

Scope: TypeAlias = Mapping[str, Mapping[str, JsonValue]]
"""``{collection: {field: required value}}``."""


def resolve_scopes(handshake_scope: Scope | None, auth_scopes: Scope | None) -> Scope | None:
    """The effective scope of a session: what auth grants, narrowed by what the client asks.

    * An absent or empty client scope asks for no narrowing: the result is what auth grants
      (``None``, unscoped, if auth does not restrict).
    * ``auth_scopes is None`` (the provider does not restrict): the client's scope is used as a
      voluntary filter.
    * Otherwise the result contains only collections granted by auth that the client names,
      each with the auth fields (auth values win on conflict) plus any extra narrowing fields
      the client added.  The result is never ``None`` then: an empty intersection means
      "nothing", not "everything", and ``auth_scopes={}`` grants nothing at all.

    Args:
        handshake_scope: ``syncScope`` from the client's handshake, or ``None``.
        auth_scopes: ``AuthContext.scopes`` from the auth provider, or ``None``.

    Returns:
        A new dict (never one of the arguments), or ``None`` for an unscoped session.
    """
    if not handshake_scope:
        # No client filter (absent or {}): exactly what auth grants.
        if auth_scopes is None:
            return None
        return {collection: dict(fields) for collection, fields in auth_scopes.items()}
    if auth_scopes is None:
        return {collection: dict(fields) for collection, fields in handshake_scope.items()}
    resolved: dict[str, dict[str, JsonValue]] = {}
    for collection, granted in auth_scopes.items():
        requested = handshake_scope.get(collection)
        if requested is None:
            continue
        resolved[collection] = {**requested, **granted}
    return resolved


def scope_json(scope: Scope | None) -> str:
    """A stable JSON text of a scope (sorted keys, ``1.0`` written as ``1``) for comparisons."""
    return json.dumps(_normalize(scope), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def scope_differs(sent: Scope | None, resolved: Scope | None) -> bool:
    """Whether the scope the client sent differs from the one the session enforces.

    When it does, the client's delivery watermark belongs to another view of the data, so the
    session must restart the delivery stream from 0 *and tell the client* (spec 4.4 hazard).
    ``None`` and ``{}`` are different here (unscoped versus nothing), as in the reference.
    """
    return scope_json(sent) != scope_json(resolved)


def scope_values_equal(actual: JsonValue, expected: JsonValue) -> bool:
    """JavaScript ``===`` on decoded JSON values, as the reference compares scope fields.

    Numbers compare by value (``1 === 1.0``), booleans never equal numbers, strings and
    ``null`` compare by value, and objects or arrays never match (``===`` compares references,
    and two decoded values are never the same reference).
    """
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is bool and type(expected) is bool and actual == expected
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return actual == expected
    if actual is None or expected is None:
        return actual is None and expected is None
    if isinstance(actual, str) and isinstance(expected, str):
        return actual == expected
    return False


def operation_visible(
    op: Operation,
    scopes: Scope | None,
    current_record_fields: Mapping[str, JsonValue] | None,
) -> bool:
    """Whether a session with ``scopes`` may receive ``op`` (spec 8.6 ``operationMatchesScopes``).

    The op is judged on the snapshot ``{**record, **previous_data, **data}``, where ``record``
    is the materialized record including deleted ones (this backfills scope fields that an
    update or delete does not carry).  With no record, no previous data and no data there is
    nothing to judge and the op is hidden, even under an empty ``{}`` filter.

    Args:
        op: The operation to deliver.
        scopes: The session's resolved scope (``None`` = unscoped).
        current_record_fields: ``store.find_record(...).fields``, or ``None`` if unknown.
    """
    if scopes is None:
        return True
    required = scopes.get(op.collection)
    if required is None:
        return False
    if current_record_fields is None and op.previous_data is None and op.data is None:
        return False
    snapshot = {**(current_record_fields or {}), **(op.previous_data or {}), **(op.data or {})}
    return _matches(snapshot, required)


def write_allowed(
    op: Operation,
    scopes: Scope | None,
    current_record_fields: Mapping[str, JsonValue] | None,
) -> bool:
    """Whether a session with ``scopes`` may write ``op`` (scope on write, reliability 5.3).

    Both the pre-image (the record as stored now) and the post-image (the record after the op)
    must be in scope, so a client can neither touch another tenant's record by sending data
    that looks right nor move one of its own records out of its scope:

    * insert: the inserted data must match; if a record with that id already exists (deleted
      or not), it must match too, so an insert cannot take over another tenant's record;
    * update: the stored record must match, and so must ``{**record, **data}``; with no stored
      record yet (an update that overtook its insert), ``{**previous_data, **data}`` must match;
      an atomic op on a scope field is refused because its result is only known after the fold;
    * delete: the stored record must match; a delete of an unknown record is refused.

    Args:
        op: The operation the client wants to append.
        scopes: The session's resolved scope (``None`` = unscoped: everything is allowed).
        current_record_fields: The current materialized fields, including a deleted record's,
            or ``None`` if the record does not exist.
    """
    if scopes is None:
        return True
    required = scopes.get(op.collection)
    if required is None:
        return False
    data = op.data or {}
    pre_image_ok = current_record_fields is None or _matches(current_record_fields, required)
    if op.type is OpType.INSERT:
        return op.data is not None and _matches(data, required) and pre_image_ok
    if op.type is OpType.DELETE:
        return current_record_fields is not None and pre_image_ok
    if op.atomic_ops and any(field in required for field in op.atomic_ops):
        return False
    if current_record_fields is None:
        if op.data is None and op.previous_data is None:
            return False
        return _matches({**(op.previous_data or {}), **data}, required)
    return pre_image_ok and _matches({**current_record_fields, **data}, required)


def _matches(snapshot: Mapping[str, JsonValue], required: Mapping[str, JsonValue]) -> bool:
    # A missing field is JS `undefined`, which is `===` to no JSON value (not even null).
    return all(
        field in snapshot and scope_values_equal(snapshot[field], expected)
        for field, expected in required.items()
    )


def _normalize(value: object) -> object:
    # JSON.stringify writes 1.0 as 1; the client compares its scope with ours as JS would.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: _normalize(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_normalize(item) for item in value]
    return value
