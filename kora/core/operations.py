"""Creating operations and moving them to and from the wire shape (spec 1.2, 3.1).

* ``create_operation`` is the one place where a local operation comes into being: it checks
  the invariants of spec 3.1, copies the data so later changes by the caller cannot leak in,
  and computes the content id.
* ``operation_to_wire`` gives the reference's ``SerializedOperation`` dict, keys in the
  reference's order (so ``json_stringify`` of it is byte-identical to the reference's frame).
* ``operation_from_wire`` checks a received dict strictly and builds an ``Operation``.  It
  does not verify the id; that is ``Operation.verify_id``, a separate decision.

The top-level bytes transformation of spec 2.2 (``__kora_bytes__``) belongs to the JSON codec,
not here; ``$koraBytes`` values are ordinary JSON objects at this level.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any

import attrs

from kora.core.errors import MalformedOperationError, ValidationError
from kora.core.hlc import MAX_LOGICAL, MAX_WALL_TIME, HLCTimestamp
from kora.core.json_types import JsonObject, JsonValue, copy_json_value
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType

__all__ = [
    "common_operation_from_wire",
    "create_operation",
    "operation_from_wire",
    "operation_to_wire",
]

_NUMERIC_ATOMIC_TYPES = frozenset({AtomicOpType.INCREMENT, AtomicOpType.MAX, AtomicOpType.MIN})


# ---------------------------------------------------------------------------------- create


def _data_copy(value: Mapping[str, Any] | None, name: str) -> JsonObject | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError(f"{name} must be a mapping or None, got {type(value).__name__}")
    copied = copy_json_value(value, name)
    assert isinstance(copied, dict)
    return copied


def _require_text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _require_int(value: object, name: str, minimum: int) -> int:
    if type(value) is not int or value < minimum:
        raise ValidationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _atomic_ops(
    atomic_ops: Mapping[str, AtomicOp | Mapping[str, Any]] | None,
    op_type: OpType,
    data: JsonObject | None,
) -> dict[str, AtomicOp] | None:
    if not atomic_ops:
        # Empty and absent are the same operation: an empty map is not hashed (spec 3.2).
        return None
    if op_type is not OpType.UPDATE:
        raise ValidationError(f"atomic_ops are only allowed on updates, not on {op_type}")
    result: dict[str, AtomicOp] = {}
    for field, atomic in atomic_ops.items():
        if not isinstance(atomic, AtomicOp):
            if not isinstance(atomic, Mapping) or "type" not in atomic or "value" not in atomic:
                raise ValidationError(
                    f"atomic_ops[{field!r}] must be an AtomicOp or {{type, value}}, got {atomic!r}"
                )
            try:
                kind = AtomicOpType(atomic["type"])
            except ValueError:
                raise ValidationError(
                    f"atomic_ops[{field!r}] has unknown type {atomic['type']!r}"
                ) from None
            atomic = AtomicOp(kind, atomic["value"])
        kind = AtomicOpType(atomic.type)
        value = copy_json_value(atomic.value, f"atomic_ops[{field!r}].value")
        if kind in _NUMERIC_ATOMIC_TYPES and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise ValidationError(f"atomic_ops[{field!r}] {kind} needs a number, got {value!r}")
        # The intent travels with the resolved value (spec 3.7), so peers without the same
        # base still converge through LWW on data[field].
        if data is None or field not in data:
            raise ValidationError(
                f"atomic_ops[{field!r}] needs the resolved value in data[{field!r}]"
            )
        result[_require_text(field, "atomic_ops field")] = AtomicOp(kind, value)
    return result


def create_operation(
    *,
    node_id: str,
    type: OpType | str,
    collection: str,
    record_id: str,
    data: Mapping[str, Any] | None,
    previous_data: Mapping[str, Any] | None,
    timestamp: HLCTimestamp,
    sequence_number: int,
    causal_deps: Iterable[str] = (),
    schema_version: int = 1,
    atomic_ops: Mapping[str, AtomicOp | Mapping[str, Any]] | None = None,
    transaction_id: str | None = None,
    mutation_name: str | None = None,
) -> Operation:
    """A new local operation with its content id, after checking spec 3.1's invariants.

    ``data``, ``previous_data`` and atomic op values are deep-copied.  Causal deps keep
    their order with repeats removed.

    Returns:
        The operation; ``op.verify_id()`` holds.

    Raises:
        ValidationError: If an invariant does not hold: insert needs ``data``; update needs
            ``data`` and ``previous_data``; delete needs both None; ``sequence_number >= 1``;
            ``schema_version >= 1``; non-empty ``node_id``, ``collection`` and ``record_id``;
            data made of JSON values only (no NaN, no raw bytes); atomic ops only on updates,
            each with its resolved value in ``data``.
        InvalidTimestampError: If the timestamp is out of range.
    """
    try:
        op_type = OpType(type)
    except ValueError:
        raise ValidationError(f"type must be insert, update or delete, got {type!r}") from None
    _require_text(node_id, "node_id")
    _require_text(collection, "collection")
    _require_text(record_id, "record_id")
    _require_int(sequence_number, "sequence_number", 1)
    _require_int(schema_version, "schema_version", 1)
    if not isinstance(timestamp, HLCTimestamp):
        raise ValidationError(f"timestamp must be an HLCTimestamp, got {timestamp!r}")
    timestamp.validate()
    data_copy = _data_copy(data, "data")
    previous_copy = _data_copy(previous_data, "previous_data")
    if op_type is OpType.INSERT and data_copy is None:
        raise ValidationError("an insert needs data")
    if op_type is OpType.UPDATE and (data_copy is None or previous_copy is None):
        raise ValidationError("an update needs data (the changed fields) and previous_data")
    if op_type is OpType.DELETE and (data_copy is not None or previous_copy is not None):
        raise ValidationError("a delete has data=None and previous_data=None")
    if isinstance(causal_deps, str):
        raise ValidationError("causal_deps must be an iterable of op ids, not one string")
    deps = tuple(dict.fromkeys(_require_text(dep, "causal dep") for dep in causal_deps))
    for name, value in (("transaction_id", transaction_id), ("mutation_name", mutation_name)):
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"{name} must be a string or None, got {value!r}")
    op = Operation(
        id="",
        node_id=node_id,
        type=op_type,
        collection=collection,
        record_id=record_id,
        data=data_copy,
        previous_data=previous_copy,
        timestamp=timestamp,
        sequence_number=sequence_number,
        causal_deps=deps,
        schema_version=schema_version,
        atomic_ops=_atomic_ops(atomic_ops, op_type, data_copy),
        transaction_id=transaction_id,
        mutation_name=mutation_name,
    )
    return op.with_computed_id()


# ------------------------------------------------------------------------------------ wire


def operation_to_wire(op: Operation) -> dict[str, Any]:
    """The reference's ``SerializedOperation`` (spec 1.2), keys in the reference's order.

    ``data`` and ``previousData`` are always present (None when absent); ``atomicOps``,
    ``transactionId`` and ``mutationName`` only when set.  Values are shared with ``op``,
    not copied: treat the result as read-only.
    """
    wire: dict[str, Any] = {
        "id": op.id,
        "nodeId": op.node_id,
        "type": op.type.value,
        "collection": op.collection,
        "recordId": op.record_id,
        "data": None if op.data is None else _plain(op.data),
        "previousData": None if op.previous_data is None else _plain(op.previous_data),
        "timestamp": {
            "wallTime": op.timestamp.wall_time,
            "logical": op.timestamp.logical,
            "nodeId": op.timestamp.node_id,
        },
        "sequenceNumber": op.sequence_number,
        "causalDeps": list(op.causal_deps),
        "schemaVersion": op.schema_version,
    }
    if op.atomic_ops is not None:
        wire["atomicOps"] = {field: atomic.to_wire() for field, atomic in op.atomic_ops.items()}
    if op.transaction_id is not None:
        wire["transactionId"] = op.transaction_id
    if op.mutation_name is not None:
        wire["mutationName"] = op.mutation_name
    return wire


def _plain(data: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
    # json.dumps takes only real dicts on its fast path.
    return data if type(data) is dict else dict(data)


def _bad(field: str, expected: str, value: object, op_id: object = None) -> MalformedOperationError:
    where = f" in operation {op_id!r}" if isinstance(op_id, str) and op_id else ""
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    given = "missing" if value is _MISSING else f"{type(value).__name__} {shown}"
    return MalformedOperationError(f"{field}{where} must be {expected}, got {given}", field=field)


_MISSING: Any = object()


def _text(wire: Mapping[str, Any], key: str, op_id: object, *, path: str = "") -> str:
    value = wire.get(key, _MISSING)
    if not isinstance(value, str) or not value:
        raise _bad(path + key, "a non-empty string", value, op_id)
    return value


def _int(
    wire: Mapping[str, Any], key: str, op_id: object, minimum: int, maximum: int | None = None
) -> int:
    value = wire.get(key, _MISSING)
    if type(value) is not int or value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise _bad(key, f"an integer {bounds}", value, op_id)
    return value


def _object_or_null(wire: Mapping[str, Any], key: str, op_id: object) -> JsonObject | None:
    # An absent key decodes as null (spec 1.2).
    value = wire.get(key)
    if value is not None and not isinstance(value, dict):
        raise _bad(key, "an object or null", value, op_id)
    return value


def _wire_timestamp(wire: Mapping[str, Any], op_id: object) -> HLCTimestamp:
    raw = wire.get("timestamp", _MISSING)
    if not isinstance(raw, Mapping):
        raise _bad("timestamp", "an object {wallTime, logical, nodeId}", raw, op_id)
    wall = raw.get("wallTime", _MISSING)
    if type(wall) is not int or not 0 <= wall < MAX_WALL_TIME:
        raise _bad("timestamp.wallTime", f"an integer in 0..{MAX_WALL_TIME - 1}", wall, op_id)
    logical = raw.get("logical", _MISSING)
    if type(logical) is not int or not 0 <= logical <= MAX_LOGICAL:
        raise _bad("timestamp.logical", f"an integer in 0..{MAX_LOGICAL}", logical, op_id)
    node = raw.get("nodeId", _MISSING)
    if not isinstance(node, str):
        raise _bad("timestamp.nodeId", "a string", node, op_id)
    return HLCTimestamp(wall, logical, node)


def _wire_atomic_ops(wire: Mapping[str, Any], op_id: object) -> dict[str, AtomicOp] | None:
    raw = wire.get("atomicOps", _MISSING)
    if raw is _MISSING:
        return None
    if not isinstance(raw, Mapping):
        raise _bad("atomicOps", "an object {field: {type, value}}", raw, op_id)
    result: dict[str, AtomicOp] = {}
    for field, atomic in raw.items():
        path = f"atomicOps.{field}"
        if not isinstance(atomic, Mapping) or "value" not in atomic:
            raise _bad(path, "an object {type, value}", atomic, op_id)
        try:
            kind = AtomicOpType(atomic.get("type", ""))
        except ValueError:
            raise _bad(
                f"{path}.type",
                "one of " + ", ".join(t.value for t in AtomicOpType),
                atomic.get("type", _MISSING),
                op_id,
            ) from None
        value = atomic["value"]
        if kind in _NUMERIC_ATOMIC_TYPES and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise _bad(f"{path}.value", f"a number for {kind}", value, op_id)
        result[field] = AtomicOp(kind, value)
    return result


_OP_TYPES: dict[str, OpType] = {kind.value: kind for kind in OpType}
# The fast paths (here and in the kora-pb1 decoder) build operations positionally.
assert [field.name for field in attrs.fields(Operation)] == [
    "id",
    "node_id",
    "type",
    "collection",
    "record_id",
    "data",
    "previous_data",
    "timestamp",
    "sequence_number",
    "causal_deps",
    "schema_version",
    "atomic_ops",
    "transaction_id",
    "mutation_name",
]
_COMMON_FIELDS = itemgetter(
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
)
_COMMON_SIZE = 11  # the keys above: no atomic ops, transaction id, mutation name or extras
_TIMESTAMP_FIELDS = itemgetter("wallTime", "logical", "nodeId")


def common_operation_from_wire(wire: dict[str, Any]) -> Operation | None:
    """``operation_from_wire(wire)`` if ``wire`` has the common shape and passes every
    check of the full path with exact types, else None: then the full path decides, and
    says why.

    A fresh client decodes every operation of the server through here, so the lookups are
    one C call and the checks one expression of exact type tests.
    """
    if type(wire) is not dict:
        return None
    try:
        (
            op_id,
            node_id,
            raw_type,
            collection,
            record_id,
            data,
            previous_data,
            raw_ts,
            sequence_number,
            deps,
            schema_version,
        ) = _COMMON_FIELDS(wire)
    except KeyError:
        return None  # e.g. data left out (null): the full path
    if len(wire) == _COMMON_SIZE:
        transaction_id = mutation_name = None
    elif "atomicOps" in wire:
        return None
    else:
        transaction_id = wire.get("transactionId")
        mutation_name = wire.get("mutationName")
    if not (
        type(op_id) is str
        and type(node_id) is str
        and type(collection) is str
        and type(record_id) is str
        and type(raw_type) is str
        and op_id
        and node_id
        and collection
        and record_id
        and (data is None or type(data) is dict)
        and (previous_data is None or type(previous_data) is dict)
        and type(raw_ts) is dict
        and type(sequence_number) is int
        and sequence_number >= 0
        and type(schema_version) is int
        and schema_version >= 1
        and type(deps) is list
        and (transaction_id is None or type(transaction_id) is str)
        and (mutation_name is None or type(mutation_name) is str)
    ):
        return None
    op_type = _OP_TYPES.get(raw_type)
    if op_type is None:
        return None
    # Per-type rules: insert and update carry data, an update its previous data too, a
    # delete none (its previousData may be anything the full path allows).
    if op_type is OpType.DELETE:
        if data is not None:
            return None
    elif data is None or (op_type is OpType.UPDATE and previous_data is None):
        return None
    try:
        wall, logical, ts_node = _TIMESTAMP_FIELDS(raw_ts)
    except KeyError:
        return None
    if not (
        type(wall) is int
        and type(logical) is int
        and type(ts_node) is str
        and 0 <= wall < MAX_WALL_TIME
        and 0 <= logical <= MAX_LOGICAL
    ):
        return None
    for dep in deps:
        if type(dep) is not str:
            return None
    return Operation(
        op_id,
        node_id,
        op_type,
        collection,
        record_id,
        data,
        previous_data,
        HLCTimestamp(wall, logical, ts_node),
        sequence_number,
        tuple(deps),
        schema_version,
        None,
        transaction_id,
        mutation_name,
    )


def operation_from_wire(wire: Mapping[str, Any]) -> Operation:
    """Check a received ``SerializedOperation`` strictly and build the ``Operation``.

    Unknown extra keys are ignored, as the reference does.  ``data``/``previousData`` may
    be absent (null).  The per-type rules that the reference's ``createOperation`` enforces
    (insert has data; update has data and previousData; delete has no data) are checked,
    because no correct peer can send anything else.  The id is *not* verified.

    Args:
        wire: A dict decoded from JSON.

    Returns:
        The operation (its data dicts are the ones in ``wire``, not copies).

    Raises:
        MalformedOperationError: Naming the first offending field (``error.field``).
    """
    if type(wire) is dict:
        op = common_operation_from_wire(wire)
        if op is not None:
            return op
    elif not isinstance(wire, Mapping):
        raise _bad("operation", "an object", wire)
    op_id = wire.get("id", _MISSING)
    _text(wire, "id", op_id)
    node_id = _text(wire, "nodeId", op_id)
    raw_type = wire.get("type", _MISSING)
    try:
        op_type = OpType(raw_type)
    except ValueError:
        raise _bad("type", '"insert", "update" or "delete"', raw_type, op_id) from None
    collection = _text(wire, "collection", op_id)
    record_id = _text(wire, "recordId", op_id)
    data = _object_or_null(wire, "data", op_id)
    previous_data = _object_or_null(wire, "previousData", op_id)
    timestamp = _wire_timestamp(wire, op_id)
    sequence_number = _int(wire, "sequenceNumber", op_id, 0)
    deps = wire.get("causalDeps", _MISSING)
    if not isinstance(deps, list) or not all(isinstance(dep, str) for dep in deps):
        raise _bad("causalDeps", "an array of strings", deps, op_id)
    schema_version = _int(wire, "schemaVersion", op_id, 1)
    atomic_ops = _wire_atomic_ops(wire, op_id)
    optional: dict[str, str | None] = {}
    for key in ("transactionId", "mutationName"):
        value = wire.get(key)
        if value is not None and not isinstance(value, str):
            raise _bad(key, "a string when present", value, op_id)
        optional[key] = value
    if op_type is OpType.INSERT and data is None:
        raise _bad("data", "an object for an insert", data, op_id)
    if op_type is OpType.UPDATE and data is None:
        raise _bad("data", "an object for an update", data, op_id)
    if op_type is OpType.UPDATE and previous_data is None:
        raise _bad("previousData", "an object for an update", previous_data, op_id)
    if op_type is OpType.DELETE and data is not None:
        raise _bad("data", "null for a delete", data, op_id)
    return Operation(
        id=str(op_id),
        node_id=node_id,
        type=op_type,
        collection=collection,
        record_id=record_id,
        data=data,
        previous_data=previous_data,
        timestamp=timestamp,
        sequence_number=sequence_number,
        causal_deps=tuple(deps),
        schema_version=schema_version,
        atomic_ops=atomic_ops,
        transaction_id=optional["transactionId"],
        mutation_name=optional["mutationName"],
    )
