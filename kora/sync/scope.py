"""Which local operations the sync scope lets us send (spec 5.3, 5.8).

A server that scopes a session (``acceptedScope``, e.g. ``{"todos": {"ownerId": "alice"}}``)
refuses operations outside that scope.  Like the Kora.js client, the engine does not send
them: an operation is judged on the snapshot ``{**record, **previous_data, **data}``, where
the record (deleted or not) backfills scope fields that an update or a delete does not
carry.  Unlike Kora.js, which drops them silently, a queued operation left out this way is
rejected locally with :data:`OUT_OF_SCOPE`, so the app finds it in
``app.rejected_operations()`` and the queue does not wait for it for ever.

The rules of the reference client (``operationMatchesScope``):

* no scope: everything is in scope;
* a collection the scope does not name: out of scope;
* ``{}`` for the collection: everything in it is in scope;
* otherwise every scope field must be JavaScript-``===`` to its value in the snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from kora.core.json_types import JsonValue
from kora.core.operation import Operation

__all__ = ["OUT_OF_SCOPE", "needs_record", "operation_in_scope", "scope_values_equal"]

#: The code of a queued operation the engine rejected itself because it is outside the scope
#: the server granted (the server would refuse it with ``SCOPE_VIOLATION``).
OUT_OF_SCOPE: Final = "OUT_OF_SCOPE"

Scope = Mapping[str, Mapping[str, JsonValue]]


def scope_values_equal(actual: object, expected: object) -> bool:
    """JavaScript ``===`` on decoded JSON values, as the reference compares scope fields.

    Numbers compare by value (``1 === 1.0``), booleans never equal numbers, strings and
    ``null`` compare by value, objects and arrays never match (``===`` compares references).
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


def needs_record(op: Operation, scope: Scope | None) -> bool:
    """Whether judging ``op`` needs its record: a scope field it does not carry itself."""
    if scope is None:
        return False
    required = scope.get(op.collection)
    if not required:
        return False
    carried = {**(op.previous_data or {}), **(op.data or {})}
    return any(field not in carried for field in required)


def operation_in_scope(
    op: Operation, scope: Scope | None, record_fields: Mapping[str, JsonValue] | None = None
) -> bool:
    """Whether ``op`` may be sent under ``scope`` (see the module docstring).

    Args:
        op: A local operation.
        scope: The scope the server granted (``None``: unscoped).
        record_fields: The fields of the op's record, deleted or not (None if unknown);
            needed only when :func:`needs_record` says so.
    """
    if scope is None:
        return True
    required = scope.get(op.collection)
    if required is None:
        return False
    snapshot = {**(record_fields or {}), **(op.previous_data or {}), **(op.data or {})}
    return all(
        field in snapshot and scope_values_equal(snapshot[field], expected)
        for field, expected in required.items()
    )
