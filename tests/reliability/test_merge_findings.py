"""Merge bugs found by the convergence simulation (B1), each pinned by a small test."""

from __future__ import annotations

from kora.core.hlc import HLCTimestamp
from kora.core.operation import AtomicOp, AtomicOpType, Operation
from kora.core.operations import create_operation
from kora.merge import fold
from kora.merge.fold import apply


def op(
    wall: int, node: str, seq: int, kind: str, data: dict | None, atomic: dict | None = None
) -> Operation:
    return create_operation(
        type=kind,
        node_id=node,
        collection="tags",
        record_id="tags-16",
        data=data,
        previous_data={} if kind == "update" else None,
        timestamp=HLCTimestamp(wall, 0, node),
        sequence_number=seq,
        atomic_ops=atomic,
    )


def increment(wall: int, node: str, seq: int, by: int, resolved: int) -> Operation:
    return op(
        wall,
        node,
        seq,
        "update",
        {"count": resolved},
        {"count": AtomicOp(AtomicOpType.INCREMENT, by)},
    )


# Simulation seed 1 (tags/tags-16), reduced: an increment chain, then a re-insert that
# replaces the record, then an increment made by a node that had not seen the insert yet.
FIRST = op(1000, "node-1", 1, "insert", {"title": "a"})
CHAIN = increment(2000, "node-1", 2, 3, 3)
REINSERT = op(3000, "node-2", 1, "insert", {"title": "b"})
STALE_INCREMENT = increment(4000, "node-3", 1, 3, 15)  # node-3 resolved 12 + 3 locally


def test_an_insert_resets_the_atomic_chain_of_fields_it_does_not_write() -> None:
    # Spec 3.7: an insert sets the record to its data with every field a plain LWW write,
    # so the next increment of ``count`` has no atomic predecessor and takes its resolved
    # value (15).  The fold kept ``count``'s "last writer was an increment" mark across
    # the insert and composed 0 + 3 = 3 instead.
    state = fold([FIRST, CHAIN, REINSERT, STALE_INCREMENT])
    assert state is not None
    assert state.fields == {"title": "b", "count": 15}
    assert "count" not in fold([FIRST, CHAIN, REINSERT]).field_atomic  # type: ignore[union-attr]


def test_the_fast_path_agrees_with_the_fold_after_a_reinsert() -> None:
    state = fold([FIRST, CHAIN, REINSERT])
    assert state is not None
    assert (
        apply(state, STALE_INCREMENT).fields
        == fold([FIRST, CHAIN, REINSERT, STALE_INCREMENT]).fields
    )  # type: ignore[union-attr]
