"""create_operation, operation_to_wire and operation_from_wire (spec 1.2, 3.1)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from kora.core import (
    AtomicOp,
    AtomicOpType,
    HLCTimestamp,
    InvalidTimestampError,
    MalformedOperationError,
    Operation,
    OpType,
    RemoteError,
    ValidationError,
    json_stringify,
)
from kora.core.operations import create_operation, operation_from_wire, operation_to_wire

TS = HLCTimestamp(1_700_000_000_000, 0, "node-1")


def make(**overrides: Any) -> Operation:
    fields: dict[str, Any] = {
        "node_id": "node-1",
        "type": "insert",
        "collection": "todos",
        "record_id": "rec-1",
        "data": {"title": "test", "completed": False},
        "previous_data": None,
        "timestamp": TS,
        "sequence_number": 1,
    }
    fields.update(overrides)
    return create_operation(**fields)


def test_create_operation_matches_the_reference_id_and_frame(vectors_dir: Path) -> None:
    frames = json.loads((vectors_dir / "json_frames.json").read_text(encoding="utf-8"))
    frame = frames["frames"][0]
    op = make()
    assert op.id == "9ffd310a21534d4e0d18a6514fa486bd0c3957a0ba8d279c04ce277a751e6d06"
    assert op.verify_id()
    message = {
        "type": "operation-batch",
        "messageId": "m-1",
        "operations": [operation_to_wire(op)],
        "isFinal": True,
        "batchIndex": 0,
    }
    assert json_stringify(message) == frame["frame"]
    decoded = operation_from_wire(frame["decoded"]["operations"][0])
    assert decoded == op
    assert decoded.verify_id()


def test_update_with_atomic_op_matches_the_reference_id() -> None:
    op = make(
        type=OpType.UPDATE,
        data={"count": 6, "title": "x"},
        previous_data={"count": 5, "title": "y"},
        timestamp=HLCTimestamp(1_700_000_000_500, 3, "node-1"),
        atomic_ops={"count": AtomicOp(AtomicOpType.INCREMENT, 1)},
    )
    assert op.id == "8e17de78e9ae5641fb38e982675d6e5aafc6195f01bd5ddf5bad83cc9821168e"
    same = make(
        type="update",
        data={"title": "x", "count": 6},
        previous_data={},
        timestamp=HLCTimestamp(1_700_000_000_500, 3, "node-1"),
        atomic_ops={"count": {"type": "increment", "value": 1}},
        sequence_number=9,
        causal_deps=["a", "b", "a"],
        transaction_id="tx",
        mutation_name="bump",
    )
    assert same.id == op.id
    assert same.causal_deps == ("a", "b")
    wire = operation_to_wire(same)
    assert list(wire)[-3:] == ["atomicOps", "transactionId", "mutationName"]
    assert operation_from_wire(json.loads(json_stringify(wire))) == same


def test_delete_matches_the_reference_id() -> None:
    op = make(
        node_id="node-2",
        type="delete",
        data=None,
        timestamp=HLCTimestamp(1_700_000_001_000, 0, "node-2"),
    )
    assert op.id == "a6b9e8c5190d7458c01a7b88e8ea90fdffab8785d903518e2fd26a0664103553"


def test_create_operation_copies_data_deeply() -> None:
    data: dict[str, Any] = {"tags": ["a"], "meta": {"x": 1}}
    op = make(data=data)
    data["tags"].append("b")
    data["meta"]["x"] = 2
    assert op.data == {"tags": ["a"], "meta": {"x": 1}}
    assert op.verify_id()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"type": "upsert"}, "type must be"),
        ({"node_id": ""}, "node_id"),
        ({"collection": ""}, "collection"),
        ({"record_id": None}, "record_id"),
        ({"sequence_number": 0}, "sequence_number"),
        ({"sequence_number": 1.0}, "sequence_number"),
        ({"schema_version": 0}, "schema_version"),
        ({"data": None}, "insert needs data"),
        ({"type": "update", "previous_data": None}, "update needs"),
        ({"type": "update", "data": None, "previous_data": {}}, "update needs"),
        ({"type": "delete"}, "delete has data=None"),
        ({"type": "delete", "data": None, "previous_data": {"a": 1}}, "delete has"),
        ({"data": {"x": math.nan}}, r"data\.x is nan"),
        ({"data": {"x": [1, math.inf]}}, r"data\.x\[1\]"),
        ({"data": {"blob": b"\x00"}}, "raw bytes"),
        ({"data": {"x": {1: 2}}}, "non-string key"),
        ({"data": {"x": {1, 2}}}, "not a JSON value"),
        ({"data": "x"}, "must be a mapping"),
        ({"causal_deps": "abc"}, "not one string"),
        ({"causal_deps": [""]}, "causal dep"),
        ({"transaction_id": 5}, "transaction_id"),
        ({"timestamp": "001:00000:n"}, "HLCTimestamp"),
        ({"atomic_ops": {"title": AtomicOp(AtomicOpType.APPEND, 1)}}, "only allowed on updates"),
        (
            {
                "type": "update",
                "previous_data": {},
                "atomic_ops": {"n": {"type": "increment", "value": 1}},
            },
            r"resolved value in data\['n'\]",
        ),
        (
            {
                "type": "update",
                "previous_data": {},
                "atomic_ops": {"title": {"type": "max", "value": "a"}},
            },
            "needs a number",
        ),
        (
            {
                "type": "update",
                "previous_data": {},
                "atomic_ops": {"title": {"type": "mul", "value": 2}},
            },
            "unknown type",
        ),
        (
            {"type": "update", "previous_data": {}, "atomic_ops": {"title": 3}},
            "must be an AtomicOp",
        ),
    ],
)
def test_create_operation_rejects_broken_invariants(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        make(**overrides)


def test_create_operation_rejects_an_unserializable_timestamp() -> None:
    with pytest.raises(InvalidTimestampError):
        make(timestamp=HLCTimestamp(10**15, 0, "n"))


def test_empty_atomic_ops_are_dropped() -> None:
    op = make(type="update", previous_data={}, atomic_ops={})
    assert op.atomic_ops is None
    assert "atomicOps" not in operation_to_wire(op)


def wire_op(**overrides: Any) -> dict[str, Any]:
    wire = operation_to_wire(make())
    for key, value in overrides.items():
        if value is ...:
            wire.pop(key)
        else:
            wire[key] = value
    return wire


def test_from_wire_treats_absent_data_keys_as_null_and_ignores_extras() -> None:
    op = operation_from_wire(wire_op(type="delete", data=..., previousData=..., extra=1))
    assert op.data is None
    assert op.previous_data is None
    assert op.type is OpType.DELETE
    assert not op.verify_id()  # the id is not checked here, but it can be checked after


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"id": ...}, "id"),
        ({"id": 5}, "id"),
        ({"nodeId": ""}, "nodeId"),
        ({"type": "upsert"}, "type"),
        ({"collection": None}, "collection"),
        ({"recordId": ...}, "recordId"),
        ({"data": [1]}, "data"),
        ({"data": None}, "data"),
        ({"previousData": "x"}, "previousData"),
        ({"type": "update", "previousData": None}, "previousData"),
        ({"type": "delete"}, "data"),
        ({"timestamp": ...}, "timestamp"),
        ({"timestamp": "001700000000000:00000:node-1"}, "timestamp"),
        ({"timestamp": {"wallTime": 1.5, "logical": 0, "nodeId": "n"}}, "timestamp.wallTime"),
        ({"timestamp": {"wallTime": -1, "logical": 0, "nodeId": "n"}}, "timestamp.wallTime"),
        ({"timestamp": {"wallTime": 1, "logical": 100000, "nodeId": "n"}}, "timestamp.logical"),
        ({"timestamp": {"wallTime": 1, "logical": True, "nodeId": "n"}}, "timestamp.logical"),
        ({"timestamp": {"wallTime": 1, "logical": 0}}, "timestamp.nodeId"),
        ({"sequenceNumber": -1}, "sequenceNumber"),
        ({"sequenceNumber": "1"}, "sequenceNumber"),
        ({"causalDeps": ...}, "causalDeps"),
        ({"causalDeps": [1]}, "causalDeps"),
        ({"causalDeps": "a"}, "causalDeps"),
        ({"schemaVersion": 0}, "schemaVersion"),
        ({"atomicOps": []}, "atomicOps"),
        ({"atomicOps": {"n": {"type": "increment"}}}, "atomicOps.n"),
        ({"atomicOps": {"n": {"type": "mul", "value": 1}}}, "atomicOps.n.type"),
        ({"atomicOps": {"n": {"type": "min", "value": "1"}}}, "atomicOps.n.value"),
        ({"transactionId": 3}, "transactionId"),
        ({"mutationName": ["m"]}, "mutationName"),
    ],
)
def test_from_wire_names_the_bad_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(MalformedOperationError) as caught:
        operation_from_wire(wire_op(**overrides))
    error = caught.value
    assert error.field == field
    assert error.code == "INVALID_OPERATION"
    assert isinstance(error, RemoteError)
    assert field in str(error)


def test_from_wire_rejects_a_non_object() -> None:
    with pytest.raises(MalformedOperationError, match="operation must be an object"):
        operation_from_wire([])  # type: ignore[arg-type]


def test_from_wire_accepts_sequence_zero_and_keeps_empty_atomic_ops() -> None:
    op = operation_from_wire(wire_op(sequenceNumber=0, atomicOps={}))
    assert op.sequence_number == 0
    assert op.atomic_ops == {}
    assert operation_to_wire(op)["atomicOps"] == {}
    assert op.compute_id() == make().id  # empty atomicOps are not hashed


class _NotADict(dict[str, Any]):
    """A mapping that is not exactly a dict: ``operation_from_wire`` takes its full path."""


_ODD_VALUES: list[Any] = [
    ...,
    None,
    "",
    "x",
    0,
    -1,
    1,
    True,
    1.0,
    2**53,
    [],
    ["a"],
    [1],
    {},
    {"a": 1},
]


@pytest.mark.parametrize("kind", ["insert", "update", "delete"])
@pytest.mark.parametrize(
    "key",
    [
        "id",
        "nodeId",
        "type",
        "collection",
        "recordId",
        "data",
        "previousData",
        "timestamp",
        "sequenceNumber",
        "causalDeps",
        "schemaVersion",
        "transactionId",
        "mutationName",
        "wallTime",
        "logical",
        "tsNodeId",
    ],
)
def test_from_wire_fast_path_agrees_with_the_full_path(kind: str, key: str) -> None:
    # A plain dict of the common shape is checked by one fast expression; anything it does
    # not accept goes through the field-by-field path, so both must give the same answer.
    base = wire_op(type=kind, previousData={"title": "old"} if kind == "update" else None)
    if kind == "delete":
        base["data"] = None
    for value in _ODD_VALUES:
        wire = {**base, "timestamp": dict(base["timestamp"])}
        target, name = (wire["timestamp"], key) if key in ("wallTime", "logical") else (wire, key)
        if key == "tsNodeId":
            target, name = wire["timestamp"], "nodeId"
        if value is ...:
            target.pop(name, None)
        else:
            target[name] = value
        slow = _NotADict(wire)
        try:
            expected: Operation | str = operation_from_wire(slow)
        except MalformedOperationError as exc:
            expected = f"{exc.field}: {exc}"
        try:
            got: Operation | str = operation_from_wire(wire)
        except MalformedOperationError as exc:
            got = f"{exc.field}: {exc}"
        assert got == expected, (key, value)
        if isinstance(got, Operation):
            assert isinstance(expected, Operation)
            assert type(got.type) is OpType
            assert type(got.causal_deps) is tuple
            assert got.data is wire.get("data")  # not a copy
