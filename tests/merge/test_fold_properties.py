"""Hypothesis properties of the record fold: order independence, idempotence, convergence."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from merge_helpers import make_op

from kora.core.atomic import apply_atomic_op
from kora.core.json_types import JsonValue
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType
from kora.merge import RecordDraft, RecordState, apply, fold, is_newer

PROPERTY = settings(max_examples=500, deadline=None)

# Node ids include a BMP private-use character and an astral one: their code-point order
# and their UTF-16 order disagree, which the HLC tie-break must get right.
NODES = ["node-a", "node-b", "\ue000", "\U0001f600"]
NUMERIC = [AtomicOpType.INCREMENT, AtomicOpType.MAX, AtomicOpType.MIN]
LIST_OPS = [AtomicOpType.APPEND, AtomicOpType.REMOVE]


@st.composite
def record_ops(draw: Any) -> list[Operation]:
    """A set of distinct operations on one record, with colliding wall times."""
    count = draw(st.integers(min_value=1, max_value=12))
    ops: list[Operation] = []
    for index in range(count):
        type_ = draw(st.sampled_from([OpType.INSERT, OpType.UPDATE, OpType.UPDATE, OpType.DELETE]))
        node = draw(st.sampled_from(NODES))
        wall = draw(st.integers(min_value=0, max_value=6))
        logical = draw(st.integers(min_value=0, max_value=2))
        data: dict[str, JsonValue] = {}
        atomic: dict[str, tuple[AtomicOpType, JsonValue]] = {}
        if type_ is not OpType.DELETE:
            if draw(st.booleans()):
                data["title"] = draw(st.sampled_from(["a", "b", "c"]))
            if draw(st.booleans()):
                data["n"] = draw(st.integers(-20, 20))
                if type_ is OpType.UPDATE and draw(st.booleans()):
                    atomic["n"] = (draw(st.sampled_from(NUMERIC)), draw(st.integers(-5, 5)))
            if draw(st.booleans()):
                data["tags"] = draw(st.lists(st.sampled_from("xyz"), max_size=3))
                if type_ is OpType.UPDATE and draw(st.booleans()):
                    atomic["tags"] = (draw(st.sampled_from(LIST_OPS)), draw(st.sampled_from("xyz")))
        op_id = f"op-{index}"
        ops.append(
            make_op(op_id, type_, wall, node, logical=logical, data=data, atomic=atomic or None)
        )
    return ops


def deliver(order: list[Operation]) -> RecordState | None:
    """What a store does: the fast path when the op is newest, otherwise a re-fold."""
    log: dict[str, Operation] = {}
    state: RecordState | None = None
    for op in order:
        if op.id in log:
            state = apply(state, op) if state and state.last_op_id == op.id else state
            continue
        log[op.id] = op
        state = apply(state, op) if is_newer(state, op) else fold(log.values())
    return state


@PROPERTY
@given(ops=record_ops(), data=st.data())
def test_any_delivery_order_gives_the_same_state(ops: list[Operation], data: Any) -> None:
    order = data.draw(st.permutations(ops))
    assert fold(order) == fold(ops)
    assert deliver(order) == fold(ops)


def deliver_drafted(order: list[Operation]) -> RecordState | None:
    """``deliver`` as a store's remote planner does it: each run of newer operations goes
    into one ``RecordDraft``, frozen before a re-fold and at the end."""
    log: dict[str, Operation] = {}
    state: RecordState | None = None
    draft: RecordDraft | None = None
    for op in order:
        if op.id in log:
            continue
        log[op.id] = op
        stamp = op.timestamp.serialize()
        if draft is not None and draft.is_older_than(op, stamp):
            draft.apply_newer(op, stamp)
            continue
        if draft is not None:
            state, draft = draft.freeze(), None
        if state is not None and is_newer(state, op):
            draft = RecordDraft(state)
            draft.apply_newer(op, stamp)
        else:
            state = apply(state, op) if state is None else fold(log.values())
    return state if draft is None else draft.freeze()


@PROPERTY
@given(ops=record_ops(), data=st.data())
def test_a_draft_gives_what_apply_gives(ops: list[Operation], data: Any) -> None:
    order = data.draw(st.permutations(ops))
    assert deliver_drafted(order) == deliver(order) == fold(ops)


@PROPERTY
@given(ops=record_ops(), data=st.data())
def test_a_draft_leaves_the_state_it_started_from_unchanged(
    ops: list[Operation], data: Any
) -> None:
    ordered = sorted(ops, key=lambda op: (op.timestamp.sort_key(), op.id))
    split = data.draw(st.integers(1, len(ordered)))
    state = fold(ordered[:split])
    assert state is not None
    before = fold(ordered[:split])
    draft = RecordDraft(state)
    for op in ordered[split:]:
        draft.apply_newer(op, op.timestamp.serialize())
    assert state == before
    assert draft.freeze() == fold(ordered)


@PROPERTY
@given(ops=record_ops(), data=st.data())
def test_applying_an_op_twice_equals_applying_it_once(ops: list[Operation], data: Any) -> None:
    order = data.draw(st.permutations(ops))
    repeats = data.draw(st.lists(st.sampled_from(ops), max_size=6))
    with_duplicates = list(order)
    for op in repeats:
        with_duplicates.insert(data.draw(st.integers(0, len(with_duplicates))), op)
    assert fold(with_duplicates) == fold(ops)
    assert deliver(with_duplicates) == fold(ops)
    state = deliver(order)
    last = max(ops, key=lambda op: (op.timestamp.sort_key(), op.id))
    assert state is not None
    assert apply(state, last) == state


@PROPERTY
@given(
    walls=st.lists(st.integers(min_value=1, max_value=4), min_size=3, max_size=3),
    data=st.data(),
)
def test_three_concurrent_increments_converge_to_their_sum(walls: list[int], data: Any) -> None:
    base = make_op("base", OpType.INSERT, 0, "node-a", data={"count": 0, "title": "stock"})
    replicas: list[dict[str, Operation]] = [{"base": base} for _ in range(3)]
    # Each replica increments from the common base, resolving against what it sees locally.
    for index, (delta, wall) in enumerate(zip([5, 3, 2], walls, strict=True)):
        local = fold(replicas[index].values())
        assert local is not None
        intent_type = AtomicOpType.INCREMENT
        resolved = apply_atomic_op(local.fields["count"], AtomicOp(intent_type, delta))
        op = make_op(
            f"inc-{index}",
            OpType.UPDATE,
            wall,
            NODES[index + 1],
            data={"count": resolved},
            atomic={"count": (intent_type, delta)},
        )
        replicas[index][op.id] = op
    everything = [op for replica in replicas for op in replica.values()]
    for replica in replicas:
        # Exchange: each replica receives every op it lacks, in its own random order and
        # with duplicates, and materializes incrementally as a store would.
        incoming = data.draw(st.permutations(everything))
        state = deliver([*replica.values(), *incoming])
        assert state is not None
        assert state.fields["count"] == 10
        assert state.fields["title"] == "stock"


@PROPERTY
@given(ops=record_ops())
def test_deleted_exactly_when_the_newest_write_is_a_delete(ops: list[Operation]) -> None:
    state = fold(ops)
    assert state is not None
    newest = max(ops, key=lambda op: (op.timestamp.sort_key(), op.id))
    assert state.deleted == (newest.type is OpType.DELETE)
    assert state.version == newest.timestamp.serialize()


@PROPERTY
@given(ops=record_ops())
def test_plain_fields_hold_the_value_of_their_latest_writer(ops: list[Operation]) -> None:
    """Without atomic ops the fold is per-field LWW, cut off at the latest insert."""
    plain = [
        make_op(op.id, op.type, op.timestamp.wall_time, op.node_id,
                logical=op.timestamp.logical, data=op.data)
        for op in ops
    ]  # fmt: skip
    state = fold(plain)
    assert state is not None
    ordered = sorted(plain, key=lambda op: (op.timestamp.sort_key(), op.id))
    inserts = [
        i for i, op in enumerate(ordered) if op.type is OpType.INSERT and op.data is not None
    ]
    start = inserts[-1] if inserts else 0
    expected: dict[str, JsonValue] = {}
    for op in ordered[start:]:
        if op.data is not None:
            expected.update(op.data)
    assert state.fields == expected
