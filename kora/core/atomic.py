"""Applying one atomic op to a field's current value (spec 3.7, ``applyAtomicOp``)."""

from __future__ import annotations

import math

from kora.core.canonical import json_stringify
from kora.core.errors import ValidationError
from kora.core.json_types import JsonValue
from kora.core.operation import AtomicOp, AtomicOpType

__all__ = ["apply_atomic_op", "is_json_number"]


def is_json_number(value: object) -> bool:
    """Whether ``value`` is what JS calls a number (``bool`` is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _operand(op: AtomicOp) -> int | float:
    value = op.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(
            f"atomic {op.type} needs a number value, got {type(value).__name__}: {value!r}"
        )
    return value


def apply_atomic_op(current: JsonValue, op: AtomicOp) -> JsonValue:
    """The field's new value after ``op``, exactly as the reference's ``applyAtomicOp``.

    * increment: ``(current if it is a number else 0) + value``;
    * max / min: against ``-inf`` / ``+inf`` when ``current`` is not a number;
    * append: a copy of ``current`` (or ``[]`` when it is not a list) plus ``value``;
    * remove: ``current`` without the elements whose ``JSON.stringify`` equals that of
      ``value`` (so ``1`` and ``1.0`` are equal, ``{"a":1,"b":2}`` and ``{"b":2,"a":1}`` are
      not); ``[]`` when ``current`` is not a list.

    ``current`` is never modified.

    Args:
        current: The field's value before the op (``None`` when absent).
        op: The atomic op.

    Returns:
        The new value.

    Raises:
        ValidationError: If increment, max or min carry a value that is not a number (the
            reference would produce garbage such as string concatenation or NaN).
    """
    kind = AtomicOpType(op.type)
    if kind is AtomicOpType.INCREMENT:
        return (current if is_json_number(current) else 0) + _operand(op)  # type: ignore[operator]
    if kind is AtomicOpType.MAX:
        base = current if is_json_number(current) else -math.inf
        return max(base, _operand(op))  # type: ignore[type-var]
    if kind is AtomicOpType.MIN:
        base = current if is_json_number(current) else math.inf
        return min(base, _operand(op))  # type: ignore[type-var]
    if kind is AtomicOpType.APPEND:
        items = list(current) if isinstance(current, list) else []
        items.append(op.value)
        return items
    if not isinstance(current, list):
        return []
    target = json_stringify(op.value)
    return [item for item in current if json_stringify(item) != target]
