"""The store's fast operation builder gives exactly what create_operation gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kora.core.errors import ValidationError
from kora.core.hlc import HLCTimestamp
from kora.core.operation import AtomicOp, AtomicOpType, OpType
from kora.core.operations import create_operation
from kora.store._fast_ops import InsertBuilder, UpdateBuilder, build_operation

NODE = "01a21c48-7e88-7702-b4b0-0566f53b0960"

# Keys and strings mix ASCII with characters whose UTF-8/UTF-16 orders disagree, and lone
# surrogates, which the reference escapes.
text = st.text(
    alphabet=st.sampled_from(["a", "B", "é", "\u2028", "\ue000", "\U0001f600", "\ud800", '"'])
    | st.characters(),
    max_size=6,
)
numbers = st.integers(-(2**60), 2**60) | st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | numbers | text
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
records = st.dictionaries(text, values, max_size=5)


def both(**kwargs: Any) -> tuple[Any, Any]:
    fast, data_text, stamp = build_operation(**kwargs)
    exact = create_operation(
        node_id=kwargs["node_id"],
        type=kwargs["op_type"],
        collection=kwargs["collection"],
        record_id=kwargs["record_id"],
        data=kwargs["data"],
        previous_data=kwargs["previous_data"],
        timestamp=kwargs["timestamp"],
        sequence_number=kwargs["sequence_number"],
        causal_deps=kwargs["causal_deps"],
        schema_version=kwargs["schema_version"],
        atomic_ops=kwargs["atomic_ops"],
        transaction_id=kwargs["transaction_id"],
        mutation_name=kwargs["mutation_name"],
    )
    assert stamp == kwargs["timestamp"].serialize()
    if data_text is not None:
        assert json.loads(data_text) == fast.data
    return fast, exact


def arguments(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "node_id": NODE,
        "op_type": OpType.INSERT,
        "collection": "todos",
        "record_id": "r-1",
        "data": {"title": "x"},
        "previous_data": None,
        "timestamp": HLCTimestamp(1_700_000_000_000, 3, NODE),
        "sequence_number": 7,
        "causal_deps": ("d" * 64,),
        "schema_version": 2,
        "atomic_ops": None,
        "transaction_id": None,
        "mutation_name": None,
    }
    base.update(overrides)
    return base


@settings(max_examples=300, deadline=None)
@given(data=records, collection=text.filter(bool), record_id=text.filter(bool))
def test_inserts_equal_create_operation(
    data: dict[str, Any], collection: str, record_id: str
) -> None:
    fast, exact = both(**arguments(data=data, collection=collection, record_id=record_id))
    assert fast == exact
    assert fast.verify_id()


@settings(max_examples=300, deadline=None)
@given(
    data=records,
    previous=records,
    delta=st.integers(-100, 100) | st.floats(-1e20, 1e20),
)
def test_updates_with_atomic_ops_equal_create_operation(
    data: dict[str, Any], previous: dict[str, Any], delta: float
) -> None:
    data = {**data, "counter": 1}
    atomic = {"counter": AtomicOp(AtomicOpType.INCREMENT, delta)}
    fast, exact = both(
        **arguments(op_type=OpType.UPDATE, data=data, previous_data=previous, atomic_ops=atomic)
    )
    assert fast == exact


def test_deletes_equal_create_operation() -> None:
    fast, exact = both(**arguments(op_type=OpType.DELETE, data=None))
    assert fast == exact


def test_golden_content_ids(vectors_dir: Path) -> None:
    """Spec 3.2 worked example 1, built by the fast path."""
    op, _, _ = build_operation(
        **arguments(
            node_id="node-1",
            record_id="rec-1",
            data={"title": "test", "completed": False},
            timestamp=HLCTimestamp(1700000000000, 0, "node-1"),
        )
    )
    assert op.id == "9ffd310a21534d4e0d18a6514fa486bd0c3957a0ba8d279c04ce277a751e6d06"
    assert (vectors_dir / "content_ids.json").is_file()


@pytest.mark.parametrize("bad", [{"x": float("nan")}, {"x": b"raw"}, {"x": {1, 2}}])
def test_non_json_data_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        build_operation(**arguments(data=bad))


# No digits or e/E in strings: the number check is conservative and would send those to the
# exact path (correct, but this test is about the fast path).
ascii_text = st.text(alphabet='abcdfghijkXYZ _-/.,:"\\\\', max_size=8)
plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**15) + 1, 10**15 - 1) | ascii_text
    | st.floats(min_value=1e-3, max_value=1e12).filter(lambda f: not f.is_integer()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ascii_text, inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(ascii_text, plain_values, max_size=6))
def test_plain_data_takes_the_fast_path_and_matches(data: dict[str, Any]) -> None:
    import kora.store._fast_ops as fast_ops

    expected = create_operation(
        node_id=NODE, type=OpType.INSERT, collection="todos", record_id="r-1", data=data,
        previous_data=None, timestamp=HLCTimestamp(1_700_000_000_000, 3, NODE),
        sequence_number=7, causal_deps=("d" * 64,), schema_version=2,
    )  # fmt: skip
    original = fast_ops.create_operation
    fast_ops.create_operation = None  # type: ignore[assignment]  # any fallback would crash
    try:
        fast, _, _ = build_operation(**arguments(data=data))
    finally:
        fast_ops.create_operation = original
    assert fast == expected


def _insert_builder_and_exact(
    data: dict[str, Any], collection: str, record_id: str, *, safe_id: bool = False
) -> tuple[Any, str, Any]:
    timestamp = HLCTimestamp(1_700_000_000_000, 3, NODE)
    builder = InsertBuilder(NODE, collection, 2, "tx-1")
    fast = builder.build(
        record_id, data, timestamp, timestamp.serialize(), 7, ("d" * 64,), "m", safe_id
    )
    exact = create_operation(
        node_id=NODE, type=OpType.INSERT, collection=collection, record_id=record_id, data=data,
        previous_data=None, timestamp=timestamp, sequence_number=7, causal_deps=("d" * 64,),
        schema_version=2, transaction_id="tx-1", mutation_name="m",
    )  # fmt: skip
    return fast, builder.text, exact


@settings(max_examples=300, deadline=None)
@given(data=records, collection=text.filter(bool), record_id=text.filter(bool))
def test_the_insert_builder_equals_create_operation(
    data: dict[str, Any], collection: str, record_id: str
) -> None:
    fast, data_text, exact = _insert_builder_and_exact(data, collection, record_id)
    assert fast == exact
    assert json.loads(data_text) == fast.data
    assert fast.verify_id()


@settings(max_examples=200, deadline=None)
@given(data=st.dictionaries(ascii_text, plain_values, max_size=6))
def test_the_insert_builder_takes_its_own_path_for_flat_plain_data(data: dict[str, Any]) -> None:
    import kora.store._fast_ops as fast_ops

    flat = {key: value for key, value in data.items() if not isinstance(value, list | dict)}
    original = fast_ops.build_operation
    fast_ops.build_operation = None  # type: ignore[assignment]  # any fallback would crash
    try:
        fast, data_text, exact = _insert_builder_and_exact(
            flat, "todos", "0190f000-0000-7000-8000-000000000001", safe_id=True
        )
    finally:
        fast_ops.build_operation = original
    assert fast == exact
    assert data_text == fast_ops.encode_sorted(flat)


def test_the_insert_builder_copies_the_data() -> None:
    data: dict[str, Any] = {"title": "x"}
    fast, _, _ = _insert_builder_and_exact(data, "todos", "r-1")
    data["title"] = "changed"
    assert fast.data == {"title": "x"}


def test_slot_constructors_give_what_the_classes_give() -> None:
    from kora.core.operation import Operation
    from kora.store._fast_ops import new_hlc_timestamp, new_operation

    assert new_hlc_timestamp is not HLCTimestamp  # the fast one is in use
    assert new_hlc_timestamp(5, 6, NODE) == HLCTimestamp(5, 6, NODE)
    args = ("i", NODE, OpType.UPDATE, "c", "r", {"a": 1}, {"a": 0}, HLCTimestamp(5, 6, NODE),
            3, ("d",), 2, {"a": AtomicOp(AtomicOpType.INCREMENT, 1)}, "t", "m")  # fmt: skip
    assert new_operation is not Operation
    made = new_operation(*args)
    assert made == Operation(*args)
    assert hash(made) == hash(Operation(*args))
    with pytest.raises(AttributeError):
        made.id = "other"  # type: ignore[misc]


def _update_builder_and_exact(
    data: dict[str, Any], previous: dict[str, Any], collection: str, record_id: str
) -> tuple[Any, str, Any]:
    timestamp = HLCTimestamp(1_700_000_000_000, 3, NODE)
    builder = UpdateBuilder(NODE, collection, 2, "tx-1")
    builder.build("other-record", {"x": 1}, {}, timestamp, timestamp.serialize(), 6, (), None)
    fast = builder.build(
        record_id, data, previous, timestamp, timestamp.serialize(), 7, ("d" * 64,), "m"
    )
    exact = create_operation(
        node_id=NODE, type=OpType.UPDATE, collection=collection, record_id=record_id,
        data=data, previous_data=previous, timestamp=timestamp, sequence_number=7,
        causal_deps=("d" * 64,), schema_version=2, transaction_id="tx-1", mutation_name="m",
    )  # fmt: skip
    return fast, builder.text, exact


@settings(max_examples=300, deadline=None)
@given(
    data=records.filter(bool),
    previous=records,
    collection=text.filter(bool),
    record_id=text.filter(bool),
)
def test_the_update_builder_equals_create_operation(
    data: dict[str, Any], previous: dict[str, Any], collection: str, record_id: str
) -> None:
    fast, data_text, exact = _update_builder_and_exact(data, previous, collection, record_id)
    assert fast == exact
    assert json.loads(data_text) == fast.data
    assert fast.verify_id()


@settings(max_examples=200, deadline=None)
@given(data=st.dictionaries(ascii_text, plain_values, min_size=1, max_size=6))
def test_the_update_builder_takes_its_own_path_for_flat_plain_data(data: dict[str, Any]) -> None:
    import kora.store._fast_ops as fast_ops

    flat = {key: value for key, value in data.items() if not isinstance(value, list | dict)}
    flat = flat or {"k": 1}
    original = fast_ops.build_operation
    fast_ops.build_operation = None  # type: ignore[assignment]  # any fallback would crash
    try:
        fast, data_text, exact = _update_builder_and_exact(
            flat, {"k": 0}, "todos", "0190f000-0000-7000-8000-000000000001"
        )
    finally:
        fast_ops.build_operation = original
    assert fast == exact
    assert data_text == fast_ops.encode_sorted(flat)


def test_the_update_builder_copies_the_data() -> None:
    data: dict[str, Any] = {"title": "x"}
    fast, _, _ = _update_builder_and_exact(data, {}, "todos", "r-1")
    data["title"] = "changed"
    assert fast.data == {"title": "x"}


field_names = st.sampled_from(["a", "b", "c", "é"])


@settings(max_examples=300, deadline=None)
@given(
    fields=st.dictionaries(field_names, values, max_size=4),
    atomic=st.dictionaries(field_names, st.sampled_from(list(AtomicOpType)), max_size=3),
    data=st.dictionaries(field_names, values, min_size=1, max_size=3),
    wall=st.integers(1_699_999_999_999, 1_700_000_000_001),
    node=st.sampled_from([NODE, "0" + NODE[1:], "f" + NODE[1:]]),
)
def test_the_plain_update_merge_equals_apply(
    fields: dict[str, Any],
    atomic: dict[str, AtomicOpType],
    data: dict[str, Any],
    wall: int,
    node: str,
) -> None:
    from kora.merge import OutOfOrderError, RecordState, apply
    from kora.store._engine import _merge_plain_update

    version = HLCTimestamp(1_700_000_000_000, 5, NODE).serialize()
    state = RecordState(
        collection="todos", record_id="r-1", fields=fields,
        field_versions=dict.fromkeys(fields, version), field_atomic=atomic, deleted=False,
        version=version, created_version="000000000000001:00000:" + NODE, last_op_id="x" * 64,
    )  # fmt: skip
    timestamp = HLCTimestamp(wall, 5, node)
    op = create_operation(
        node_id=node, type=OpType.UPDATE, collection="todos", record_id="r-1", data=data,
        previous_data={}, timestamp=timestamp, sequence_number=7, causal_deps=(),
    )  # fmt: skip
    merged = _merge_plain_update(state, op, timestamp.serialize())
    try:
        expected = apply(state, op, timestamp.serialize())
    except OutOfOrderError:
        assert merged is None
    else:
        assert merged == expected
        assert merged.fields is not state.fields
