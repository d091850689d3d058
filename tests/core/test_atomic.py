"""apply_atomic_op (spec 3.7)."""

from __future__ import annotations

from typing import Any

import pytest

from kora.core import AtomicOp, AtomicOpType, ValidationError
from kora.core.atomic import apply_atomic_op

INC, MAX, MIN, APPEND, REMOVE = (
    AtomicOpType.INCREMENT,
    AtomicOpType.MAX,
    AtomicOpType.MIN,
    AtomicOpType.APPEND,
    AtomicOpType.REMOVE,
)


@pytest.mark.parametrize(
    ("current", "kind", "value", "expected"),
    [
        (5, INC, 1, 6),
        (5, INC, -7, -2),
        (1.5, INC, 1, 2.5),
        (None, INC, 3, 3),
        ("7", INC, 3, 3),
        (True, INC, 3, 3),  # a bool is not a JS number
        ([1], INC, 2, 2),
        (5, MAX, 3, 5),
        (5, MAX, 9, 9),
        (None, MAX, -100, -100),
        ("x", MAX, 4, 4),
        (5, MIN, 3, 3),
        (5, MIN, 9, 5),
        (None, MIN, 100, 100),
        ([1, 2], APPEND, 3, [1, 2, 3]),
        ([1, 2], APPEND, [3], [1, 2, [3]]),
        (None, APPEND, "a", ["a"]),
        ("str", APPEND, "a", ["a"]),
        ([1, 2, 1, 3], REMOVE, 1, [2, 3]),
        ([1.0, 2], REMOVE, 1, [2]),  # JSON.stringify(1.0) == JSON.stringify(1)
        ([{"a": 1, "b": 2}, {"b": 2, "a": 1}], REMOVE, {"a": 1, "b": 2}, [{"b": 2, "a": 1}]),
        ([[1], [2]], REMOVE, [1], [[2]]),
        ([None, 0, False], REMOVE, None, [0, False]),
        ([0, False], REMOVE, False, [0]),
        (None, REMOVE, 1, []),
        ({"a": 1}, REMOVE, 1, []),
    ],
)
def test_apply_atomic_op(current: Any, kind: AtomicOpType, value: Any, expected: Any) -> None:
    result = apply_atomic_op(current, AtomicOp(kind, value))
    assert result == expected
    assert type(result) is type(expected)


def test_the_current_list_is_not_modified() -> None:
    current = [1, 2]
    apply_atomic_op(current, AtomicOp(APPEND, 3))
    apply_atomic_op(current, AtomicOp(REMOVE, 1))
    assert current == [1, 2]


@pytest.mark.parametrize("kind", [INC, MAX, MIN])
@pytest.mark.parametrize("value", ["1", None, True, [1]])
def test_numeric_ops_need_a_number(kind: AtomicOpType, value: Any) -> None:
    with pytest.raises(ValidationError, match="needs a number"):
        apply_atomic_op(1, AtomicOp(kind, value))
