"""Content ids (spec 3.2) against the reference's golden vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kora.core import (
    AtomicOp,
    AtomicOpType,
    HLCTimestamp,
    InvalidTimestampError,
    Operation,
    OpType,
    ValidationError,
    canonical_json,
    operation_id,
)
from kora.core.content_id import hashed_object


def load_vectors(vectors_dir: Path) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(
        (vectors_dir / "content_ids.json").read_text(encoding="utf-8")
    )
    assert len(vectors) >= 3
    return vectors


def test_every_vector_gives_the_reference_canonical_string_and_id(vectors_dir: Path) -> None:
    for vector in load_vectors(vectors_dir):
        assert canonical_json(hashed_object(vector)) == vector["canonical"], vector["name"]
        assert operation_id(vector) == vector["id"], vector["name"]
        ts = HLCTimestamp(**_snake(vector["timestamp"]))
        assert ts.serialize() == vector["timestamp_serialized"]


def _snake(ts: dict[str, Any]) -> dict[str, Any]:
    return {"wall_time": ts["wallTime"], "logical": ts["logical"], "node_id": ts["nodeId"]}


def operation_from_vector(vector: dict[str, Any]) -> Operation:
    atomic = vector.get("atomicOps")
    return Operation(
        id=vector["id"],
        node_id=vector["nodeId"],
        type=OpType(vector["type"]),
        collection=vector["collection"],
        record_id=vector["recordId"],
        data=vector["data"],
        previous_data=None,
        timestamp=HLCTimestamp(**_snake(vector["timestamp"])),
        sequence_number=1,
        atomic_ops=(
            None
            if atomic is None
            else {k: AtomicOp(AtomicOpType(v["type"]), v["value"]) for k, v in atomic.items()}
        ),
    )


def test_operation_compute_and_verify_id(vectors_dir: Path) -> None:
    for vector in load_vectors(vectors_dir):
        op = operation_from_vector(vector)
        assert op.compute_id() == vector["id"]
        assert op.verify_id()
        forged = attrs.evolve(op, collection="other")
        assert not forged.verify_id()
        fixed = forged.with_computed_id()
        assert fixed.verify_id()
        assert fixed.id != vector["id"]


def test_unhashed_fields_do_not_change_the_id(vectors_dir: Path) -> None:
    op = operation_from_vector(load_vectors(vectors_dir)[0])
    changed = attrs.evolve(
        op,
        previous_data={"title": "old"},
        sequence_number=99,
        causal_deps=("x",),
        schema_version=7,
        transaction_id="tx",
        mutation_name="m",
    )
    assert changed.compute_id() == op.id


def test_empty_atomic_ops_are_not_hashed(vectors_dir: Path) -> None:
    vector = load_vectors(vectors_dir)[0]
    assert operation_id({**vector, "atomicOps": {}}) == vector["id"]
    assert operation_id({**vector, "atomicOps": None}) == vector["id"]
    assert (
        operation_id({**vector, "atomicOps": {"n": {"type": "max", "value": 1}}}) != (vector["id"])
    )


def test_timestamp_forms_are_equivalent(vectors_dir: Path) -> None:
    vector = load_vectors(vectors_dir)[1]
    ts = HLCTimestamp(**_snake(vector["timestamp"]))
    assert operation_id({**vector, "timestamp": ts}) == vector["id"]
    assert operation_id({**vector, "timestamp": vector["timestamp_serialized"]}) == vector["id"]


def test_missing_fields_and_bad_timestamps_are_errors(vectors_dir: Path) -> None:
    vector = load_vectors(vectors_dir)[0]
    with pytest.raises(ValidationError, match="recordId"):
        operation_id({k: v for k, v in vector.items() if k != "recordId"})
    with pytest.raises(ValidationError, match="wallTime"):
        operation_id({**vector, "timestamp": {"logical": 0, "nodeId": "n"}})
    with pytest.raises(InvalidTimestampError):
        operation_id({**vector, "timestamp": {"wallTime": -1, "logical": 0, "nodeId": "n"}})
    with pytest.raises(ValidationError, match="timestamp must be"):
        operation_id({**vector, "timestamp": 17})
    bad = attrs.evolve(operation_from_vector(vector), timestamp=HLCTimestamp(0, 10**6, "n"))
    assert not bad.verify_id()
    assert not attrs.evolve(operation_from_vector(vector), data={"x": {1, 2}}).verify_id()


json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_data = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        json_leaf,
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
        max_leaves=12,
    ),
    max_size=8,
)


def _reorder(value: Any, rng: st.DataObject) -> Any:
    if isinstance(value, dict):
        keys = rng.draw(st.permutations(list(value)))
        return {k: _reorder(value[k], rng) for k in keys}
    if isinstance(value, list):
        return [_reorder(v, rng) for v in value]
    return value


@given(data=json_data, rng=st.data())
@settings(max_examples=500)
def test_id_does_not_depend_on_key_order(data: dict[str, Any], rng: st.DataObject) -> None:
    fields = {
        "type": "update",
        "collection": "todos",
        "recordId": "r",
        "data": data,
        "timestamp": {"wallTime": 1, "logical": 2, "nodeId": "n"},
        "nodeId": "n",
        "atomicOps": {
            "count": {"type": "increment", "value": 1},
            "tags": {"type": "append", "value": "x"},
        },
    }
    shuffled = _reorder(fields, rng)
    assert operation_id(shuffled) == operation_id(fields)


@given(data=json_data, atomic=st.booleans(), deleted=st.booleans())
@settings(max_examples=300)
def test_an_operations_id_is_the_id_of_its_hashed_fields(
    data: dict[str, Any], atomic: bool, deleted: bool
) -> None:
    # Operation.compute_id builds the hashed object itself; it must hash what
    # operation_id(hashed_fields()) hashes.
    op = Operation(
        id="",
        node_id="0190f0a0-0000-7000-8000-00000000000a",
        type=OpType.DELETE if deleted else OpType.UPDATE,
        collection="todos",
        record_id="r",
        data=None if deleted else data,
        previous_data=None,
        timestamp=HLCTimestamp(1_700_000_000_000, 3, "0190f0a0-0000-7000-8000-00000000000a"),
        sequence_number=1,
        atomic_ops={"count": AtomicOp(AtomicOpType.INCREMENT, 1)} if atomic else None,
    )
    assert op.compute_id() == operation_id(op.hashed_fields())
