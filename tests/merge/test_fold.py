"""Worked cases of the record fold: LWW, tombstones, un-delete, atomic composition."""

from __future__ import annotations

import pytest
from merge_helpers import make_op

from kora.core.errors import ValidationError
from kora.core.operation import AtomicOpType, OpType
from kora.merge import OutOfOrderError, apply, fold, is_newer

INSERT, UPDATE, DELETE = OpType.INSERT, OpType.UPDATE, OpType.DELETE
INC = AtomicOpType.INCREMENT


def test_fold_of_nothing_is_none() -> None:
    assert fold([]) is None


def test_insert_sets_fields_and_versions() -> None:
    state = fold([make_op("i", INSERT, 10, data={"title": "milk", "done": False})])
    assert state is not None
    assert state.fields == {"title": "milk", "done": False}
    assert state.field_versions == {
        "title": "000000000000010:00000:node-a",
        "done": "000000000000010:00000:node-a",
    }
    assert state.version == state.created_version == "000000000000010:00000:node-a"
    assert not state.deleted
    assert state.last_op_id == "i"


def test_concurrent_updates_of_one_field_later_hlc_wins() -> None:
    base = make_op("i", INSERT, 10, data={"title": "a"})
    from_a = make_op("ua", UPDATE, 20, "node-a", data={"title": "from a"})
    from_b = make_op("ub", UPDATE, 20, "node-b", data={"title": "from b"})  # same wall time
    for ops in ([base, from_a, from_b], [from_b, base, from_a]):
        state = fold(ops)
        assert state is not None
        assert state.fields["title"] == "from b"  # node id breaks the tie
        assert state.field_versions["title"] == "000000000000020:00000:node-b"


def test_concurrent_updates_of_different_fields_both_survive() -> None:
    state = fold(
        [
            make_op("i", INSERT, 10, data={"title": "a", "done": False}),
            make_op("u1", UPDATE, 30, "node-a", data={"title": "b"}),
            make_op("u2", UPDATE, 20, "node-b", data={"done": True}),
        ]
    )
    assert state is not None
    assert state.fields == {"title": "b", "done": True}
    assert state.version == "000000000000030:00000:node-a"


def test_delete_tombstones_and_keeps_fields() -> None:
    state = fold(
        [
            make_op("i", INSERT, 10, data={"title": "a"}),
            make_op("d", DELETE, 20),
        ]
    )
    assert state is not None
    assert state.deleted
    assert state.fields == {"title": "a"}


def test_update_older_than_delete_stays_deleted() -> None:
    state = fold(
        [
            make_op("i", INSERT, 10, data={"title": "a"}),
            make_op("u", UPDATE, 15, "node-b", data={"title": "b"}),
            make_op("d", DELETE, 20),
        ]
    )
    assert state is not None
    assert state.deleted


def test_later_update_undeletes_and_merges_onto_pre_delete_fields() -> None:
    state = fold(
        [
            make_op("i", INSERT, 10, data={"title": "a", "done": False}),
            make_op("d", DELETE, 20),
            make_op("u", UPDATE, 30, "node-b", data={"done": True}),
        ]
    )
    assert state is not None
    assert not state.deleted
    assert state.fields == {"title": "a", "done": True}


def test_later_insert_replaces_fields() -> None:
    state = fold(
        [
            make_op("i1", INSERT, 10, data={"title": "a", "done": False}),
            make_op("d", DELETE, 20),
            make_op("i2", INSERT, 30, data={"title": "again"}),
        ]
    )
    assert state is not None
    assert not state.deleted
    assert state.fields == {"title": "again"}
    assert set(state.field_versions) == {"title"}


def test_same_type_atomic_ops_compose_and_first_one_takes_its_resolved_value() -> None:
    ops = [
        make_op("i", INSERT, 10, data={"n": 100}),
        # The first atomic write after a plain write takes its resolved value (LWW) ...
        make_op("a", UPDATE, 20, "node-a", data={"n": 7}, atomic={"n": (INC, 5)}),
        # ... the next ones of the same type compose onto the running value.
        make_op("b", UPDATE, 21, "node-b", data={"n": 103}, atomic={"n": (INC, 3)}),
        make_op("c", UPDATE, 22, "node-c", data={"n": 102}, atomic={"n": (INC, 2)}),
    ]
    state = fold(ops)
    assert state is not None
    assert state.fields["n"] == 12
    assert state.field_atomic == {"n": INC}


def test_different_atomic_type_breaks_the_chain() -> None:
    ops = [
        make_op("i", INSERT, 10, data={"n": 0}),
        make_op("a", UPDATE, 20, data={"n": 5}, atomic={"n": (INC, 5)}),
        make_op("b", UPDATE, 21, "node-b", data={"n": 9}, atomic={"n": (AtomicOpType.MAX, 9)}),
        make_op("c", UPDATE, 22, "node-c", data={"n": 4}, atomic={"n": (AtomicOpType.MAX, 4)}),
    ]
    state = fold(ops)
    assert state is not None
    assert state.fields["n"] == 9  # max(9, 4) composed after the chain restarted at 9
    assert state.field_atomic == {"n": AtomicOpType.MAX}


def test_plain_write_breaks_the_atomic_chain() -> None:
    ops = [
        make_op("i", INSERT, 10, data={"n": 0}),
        make_op("a", UPDATE, 20, data={"n": 5}, atomic={"n": (INC, 5)}),
        make_op("b", UPDATE, 21, "node-b", data={"n": 50}),
        make_op("c", UPDATE, 22, "node-c", data={"n": 1}, atomic={"n": (INC, 1)}),
    ]
    state = fold(ops)
    assert state is not None
    assert state.fields["n"] == 1
    assert state.field_atomic == {"n": INC}


def test_duplicates_are_folded_once() -> None:
    inc = make_op("a", UPDATE, 20, data={"n": 5}, atomic={"n": (INC, 5)})
    inc2 = make_op("b", UPDATE, 21, data={"n": 7}, atomic={"n": (INC, 2)})
    state = fold([make_op("i", INSERT, 10, data={"n": 0}), inc, inc2, inc2, inc])
    assert state is not None
    assert state.fields["n"] == 7


def test_apply_matches_fold_and_reapplying_the_last_op_is_a_no_op() -> None:
    ops = [
        make_op("i", INSERT, 10, data={"n": 0, "t": "x"}),
        make_op("a", UPDATE, 20, data={"n": 5}, atomic={"n": (INC, 5)}),
        make_op("d", DELETE, 25, "node-b"),
        make_op("b", UPDATE, 30, "node-c", data={"n": 7}, atomic={"n": (INC, 2)}),
    ]
    state = None
    for op in ops:
        assert is_newer(state, op)
        state = apply(state, op)
    assert state == fold(ops)
    assert apply(state, ops[-1]) is state
    # With the serialized timestamp given by the caller: the same states.
    given = None
    for op in ops:
        stamp = op.timestamp.serialize()
        assert is_newer(given, op, stamp)
        given = apply(given, op, stamp)
    assert given == state


def test_apply_refuses_an_op_that_is_not_newer() -> None:
    state = fold([make_op("i", INSERT, 10, data={"n": 0}), make_op("u", UPDATE, 30, data={})])
    late = make_op("late", UPDATE, 20, "node-b", data={"n": 1})
    assert not is_newer(state, late)
    assert not is_newer(state, late, late.timestamp.serialize())
    with pytest.raises(OutOfOrderError):
        apply(state, late)
    with pytest.raises(OutOfOrderError):
        apply(state, late, late.timestamp.serialize())


def test_newness_orders_node_ids_by_utf16_code_units() -> None:
    # U+E000 is below U+1F600 as a code point but above it in UTF-16 (surrogates D83D...).
    low = make_op("x", UPDATE, 20, "\U0001f600", data={"t": "astral"})
    high = make_op("y", UPDATE, 20, "\ue000", data={"t": "private use"})
    state = fold([low])
    assert is_newer(state, high)
    assert fold([high, low]) == apply(state, high)
    assert not is_newer(fold([high]), low)


def test_fold_rejects_ops_of_different_records() -> None:
    with pytest.raises(ValidationError):
        fold([make_op("a", INSERT, 1, data={}), make_op("b", INSERT, 2, data={}, record_id="r2")])
    state = fold([make_op("a", INSERT, 1, data={})])
    with pytest.raises(ValidationError):
        apply(state, make_op("b", UPDATE, 2, data={}, record_id="r2"))


def test_update_with_empty_data_undeletes_and_moves_the_version() -> None:
    base = make_op("i", INSERT, 10, data={"t": "a"})
    deleted = make_op("d", DELETE, 20)
    empty = make_op("u", UPDATE, 30, data={})
    state = fold([base, deleted, empty])
    assert state is not None
    assert not state.deleted  # an update with data {} still un-deletes, as in the reference
    assert state.fields == {"t": "a"}
    assert state.version == "000000000000030:00000:node-a"


def test_a_malformed_intent_from_a_peer_falls_back_to_the_resolved_value() -> None:
    ops = [
        make_op("i", INSERT, 10, data={"n": 1}),
        make_op("a", UPDATE, 20, data={"n": 2}, atomic={"n": (INC, 1)}),
        make_op("b", UPDATE, 21, "node-b", data={"n": 40}, atomic={"n": (INC, "x")}),
    ]
    state = fold(ops)
    assert state is not None
    assert state.fields["n"] == 40
