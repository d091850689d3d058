"""causal_order (spec 4.6)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kora.core import CausalCycleError, HLCTimestamp, Operation, OpType
from kora.core.causal import causal_order


def op(
    op_id: str, wall: int, deps: tuple[str, ...] = (), logical: int = 0, node: str = "n"
) -> Operation:
    return Operation(
        id=op_id,
        node_id=node,
        type=OpType.INSERT,
        collection="c",
        record_id="r",
        data={},
        previous_data=None,
        timestamp=HLCTimestamp(wall, logical, node),
        sequence_number=1,
        causal_deps=deps,
    )


def test_dependencies_come_first_even_against_hlc_order() -> None:
    late_parent = op("p", 100)
    early_child = op("c", 1, deps=("p",))
    other = op("o", 50)
    assert [o.id for o in causal_order([early_child, other, late_parent])] == ["o", "p", "c"]


def test_ready_operations_follow_the_hlc_total_order() -> None:
    ops = [
        op("x", 5, logical=1),
        op("y", 5, logical=0, node="b"),
        op("z", 5, logical=0, node="a"),
        op("w", 4),
    ]
    assert [o.id for o in causal_order(ops)] == ["w", "z", "y", "x"]


def test_equal_timestamps_are_ordered_by_id() -> None:
    ops = [op("bb", 1), op("aa", 1), op("cc", 1)]
    assert [o.id for o in causal_order(ops)] == ["aa", "bb", "cc"]


def test_self_dependencies_are_ignored() -> None:
    a, b = op("a", 2, deps=("a",)), op("b", 1, deps=("b", "a"))
    assert [o.id for o in causal_order([b, a])] == ["a", "b"]
    assert causal_order([a]) == [a]


def test_dependencies_outside_the_set_are_ignored_and_duplicates_collapse() -> None:
    a = op("a", 2, deps=("missing",))
    b = op("b", 1, deps=("a", "a"))
    assert [o.id for o in causal_order([b, a, b, a])] == ["a", "b"]
    assert causal_order([]) == []
    assert causal_order([a]) == [a]


@pytest.mark.parametrize(
    "ops",
    [
        [op("a", 1, deps=("b",)), op("b", 2, deps=("a",))],
        [op("a", 1, deps=("b",)), op("b", 2, deps=("c",)), op("c", 0, deps=("a",))],
        [op("a", 1, deps=("c",)), op("b", 2, deps=("a",)), op("c", 3, deps=("b",)), op("d", 0)],
    ],
)
def test_cycles_are_errors(ops: list[Operation]) -> None:
    with pytest.raises(CausalCycleError, match="cycle") as caught:
        causal_order(ops)
    assert caught.value.code == "CAUSAL_CYCLE"
    assert "a" in str(caught.value)


@st.composite
def dags(draw: st.DrawFn) -> list[Operation]:
    count = draw(st.integers(1, 25))
    ops = []
    for index in range(count):
        # deps only on earlier ops (so acyclic), plus some that are not in the set
        deps = draw(st.lists(st.integers(0, index + 2), max_size=3))
        ops.append(
            op(
                f"op{index:02d}",
                draw(st.integers(0, 5)),
                deps=tuple(f"op{d:02d}" for d in deps if d < index)
                + (("ext",) if 5 in deps else ()),
                logical=draw(st.integers(0, 2)),
                node=draw(st.sampled_from(["a", "b"])),
            )
        )
    return ops


@given(dags(), st.randoms(use_true_random=False))
@settings(max_examples=300)
def test_any_permutation_gives_the_same_valid_order(
    ops: list[Operation], rng: random.Random
) -> None:
    expected = causal_order(ops)
    shuffled = list(ops)
    rng.shuffle(shuffled)
    assert causal_order(shuffled) == expected
    position = {o.id: i for i, o in enumerate(expected)}
    assert len(position) == len(ops)
    for o in expected:
        for dep in o.causal_deps:
            if dep in position:
                assert position[dep] < position[o.id]
