"""Building local operations fast enough for the write path (>= 30,000 ops/s).

``kora.core.operations.create_operation`` is the definition of a new operation: it checks
spec 3.1, deep-copies the data and hashes ``kora.core.canonical.canonical_json``.  Both are
written in Python for exactness and cost about 60 µs per small operation, more than the
whole budget of a write.  This module gives the *same operation* (same id, same fields) for
the common case, with the C ``json`` encoder doing the work:

* the data is encoded once, keys sorted, by the C encoder.  That text is the canonical JSON
  of the data whenever nothing in it could be written differently by the reference
  (``_UNSAFE``: exponents, integral floats, integers of 16 or more digits, and any character
  from U+D800 up, which covers lone surrogates and the keys whose UTF-16 order differs from
  code-point order).  The same text is stored in the operation log and the records table.
* the hashed object's top-level keys are fixed, so its canonical text is assembled around it.

Whenever the fast path is not certain, ``create_operation`` builds the operation instead.
``tests/store/test_fast_ops.py`` checks equality with ``create_operation`` on generated data.
This belongs in ``kora.core.canonical`` as a fast path of ``canonical_json``; until it is
there, the store carries it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from json.encoder import c_encode_basestring, c_make_encoder  # type: ignore[attr-defined]
from typing import Any, Final, TypeVar

import attrs

from kora.core.errors import ValidationError
from kora.core.hlc import HLCTimestamp
from kora.core.json_types import JsonValue
from kora.core.operation import AtomicOp, Operation, OpType
from kora.core.operations import create_operation

__all__ = [
    "InsertBuilder",
    "UpdateBuilder",
    "build_operation",
    "encode_sorted",
    "new_hlc_timestamp",
    "new_operation",
    "serialize_timestamp",
    "slot_constructor",
]

# Anything the reference could write differently from the C encoder: exponents, integral
# floats, integers of 16+ digits (a superset: false alarms only cost the slow path).
_UNSAFE_NUMBER: Final = re.compile(r"\d[eE]|\.0[,\]}]|(?<![.\d])\d{16}")
# Lone surrogates are escaped by the reference; keys with characters from U+E000 up may sort
# differently in UTF-16.  Both need characters from U+D800 up.
_HIGH_CHARACTER: Final = re.compile("[\ud800-\U0010ffff]")
_MAX_EXACT_INT: Final = 2**53
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_TYPE_PART: Final = {kind: f'"type":"{kind.value}"' for kind in OpType}


C = TypeVar("C")


def slot_constructor(cls: type[C], sample: tuple[Any, ...]) -> Callable[..., C]:
    """A positional constructor of a frozen, slotted attrs class that fills the slots
    directly (attrs' ``__init__`` goes through ``object.__setattr__`` once per field).

    Only for classes whose ``__init__`` does nothing else: no validators, converters or
    post-init hook.  Anything else, or a constructor that does not give what ``cls(*sample)``
    gives, falls back to ``cls`` itself, so a change of the class can only cost speed.
    """
    fields = attrs.fields(cls)  # type: ignore[arg-type]
    names = [field.name for field in fields]
    slots = getattr(cls, "__slots__", ())
    if (
        any(f.validator is not None or f.converter is not None or not f.init for f in fields)
        or hasattr(cls, "__attrs_post_init__")
        or hasattr(cls, "__attrs_pre_init__")
        or not all(name in slots for name in names)
        or len(sample) != len(names)
    ):
        return cls
    params = ", ".join(f"a{i}" for i in range(len(names)))
    body = "".join(f"    s{i}(o, a{i})\n" for i in range(len(names)))
    namespace: dict[str, Any] = {f"s{i}": cls.__dict__[n].__set__ for i, n in enumerate(names)}
    namespace.update(new=object.__new__, cls=cls)
    exec(f"def construct({params}):\n    o = new(cls)\n{body}    return o\n", namespace)
    construct: Callable[..., C] = namespace["construct"]
    made = construct(*sample)
    if made != cls(*sample) or any(
        getattr(made, n) is not v for n, v in zip(names, sample, strict=True)
    ):
        return cls
    return construct


_SAMPLE_TS: Final = HLCTimestamp(1, 2, "n")
#: ``HLCTimestamp(wall_time, logical, node_id)``, positional only, for values known valid.
new_hlc_timestamp: Final = slot_constructor(HLCTimestamp, (1, 2, "n"))
#: ``Operation(...)`` with all 14 fields positional, for values known valid.
new_operation: Final = slot_constructor(
    Operation,
    ("i", "n", OpType.INSERT, "c", "r", {"a": 1}, None, _SAMPLE_TS, 1, ("d",), 1, None, "t", "m"),
)


def _safe_record_id(record_id: str) -> bool:
    """Non-empty ASCII that the JSON encoder writes as it is (nothing to escape)."""
    return (
        bool(record_id)
        and record_id.isascii()
        and len(c_encode_basestring(record_id)) == len(record_id) + 2
    )


def _refuse(value: object) -> Any:
    raise TypeError(f"a {type(value).__name__} is not a JSON value")


# Prebuilt C encoder: sorted keys, no whitespace, raw UTF-8, NaN refused, no circular check
# (a circular value fails with RecursionError instead).
_sorted_encoder = c_make_encoder(
    None, _refuse, c_encode_basestring, None, ":", ",", True, False, False
)


def encode_sorted(value: object, what: str = "data") -> str:
    """Compact JSON with sorted keys, via the C encoder.

    Raises:
        ValidationError: If ``value`` is not JSON (NaN, infinities, sets, bytes, circular).
    """
    try:
        return "".join(_sorted_encoder(value, 0))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(f"{what} is not JSON (finite numbers, str keys): {exc}") from None


def serialize_timestamp(ts: HLCTimestamp) -> str:
    """``HLCTimestamp.serialize`` without re-validating a timestamp our own clock made."""
    return f"{ts.wall_time:015d}:{ts.logical:05d}:{ts.node_id}"


def _flat_and_plain(data: Mapping[str, JsonValue]) -> bool | None:
    """True: only scalars the C encoder writes as the reference does.  False: a number it
    may write differently.  None: nested values (check the text instead)."""
    flat = True
    for key, value in data.items():
        kind = type(value)
        if kind is str or kind is bool or value is None:
            pass
        elif kind is int:
            if not -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT:  # type: ignore[operator]
                return False
        elif kind is float:
            magnitude = abs(value)  # type: ignore[arg-type]
            if not 1e-4 <= magnitude < 1e16 or float(magnitude).is_integer():
                return False
        else:
            flat = False
        if type(key) is not str:
            return False
    return True if flat else None


def build_operation(
    *,
    node_id: str,
    op_type: OpType,
    collection: str,
    record_id: str,
    data: Mapping[str, JsonValue] | None,
    previous_data: Mapping[str, JsonValue] | None,
    timestamp: HLCTimestamp,
    sequence_number: int,
    causal_deps: tuple[str, ...],
    schema_version: int,
    atomic_ops: Mapping[str, AtomicOp] | None,
    transaction_id: str | None,
    mutation_name: str | None,
) -> tuple[Operation, str | None, str]:
    """The operation ``create_operation`` would build, its data's JSON and its timestamp's.

    Raises:
        ValidationError: As ``create_operation``.
    """
    data_text = None if data is None else encode_sorted(data)
    shape = True if data is None else _flat_and_plain(data)
    flat = shape is True
    plain = shape
    if plain is None:
        assert data_text is not None
        plain = _UNSAFE_NUMBER.search(data_text) is None
    stamp = serialize_timestamp(timestamp)
    atomic_part = ""
    if atomic_ops:
        wire = {name: {"type": op.type.value, "value": op.value} for name, op in atomic_ops.items()}
        atomic_text = encode_sorted(wire, "atomic ops")
        plain = plain and _UNSAFE_NUMBER.search(atomic_text) is None
        atomic_part = '"atomicOps":' + atomic_text + ","
    # The hashed object's keys in UTF-16 order: atomicOps, collection, data, nodeId, recordId,
    # timestamp, type.
    canonical = (
        f'{{{atomic_part}"collection":{c_encode_basestring(collection)},'
        f'"data":{"null" if data_text is None else data_text},'
        f'"nodeId":{c_encode_basestring(node_id)},'
        f'"recordId":{c_encode_basestring(record_id)},'
        f'"timestamp":"{stamp}",{_TYPE_PART[op_type]}}}'
    )
    if (
        not plain
        or (not canonical.isascii() and _HIGH_CHARACTER.search(canonical) is not None)
        or (atomic_ops and any(type(op.value) not in _SCALARS for op in atomic_ops.values()))
        or not collection
        or not record_id
        or not node_id
        or (data is not None and previous_data is None and op_type is OpType.UPDATE)
    ):
        op = create_operation(
            node_id=node_id,
            type=op_type,
            collection=collection,
            record_id=record_id,
            data=data,
            previous_data=previous_data,
            timestamp=timestamp,
            sequence_number=sequence_number,
            causal_deps=causal_deps,
            schema_version=schema_version,
            atomic_ops=atomic_ops,
            transaction_id=transaction_id,
            mutation_name=mutation_name,
        )
        return op, None if op.data is None else encode_sorted(op.data), stamp
    op = Operation(
        id=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        node_id=node_id,
        type=op_type,
        collection=collection,
        record_id=record_id,
        # A flat dict of scalars is fully copied by dict(); anything nested is re-parsed, a
        # deep copy the caller can no longer change under our feet.
        data=None
        if data is None or data_text is None
        else dict(data)
        if flat
        else json.loads(data_text),
        previous_data=None if previous_data is None else dict(previous_data),
        timestamp=timestamp,
        sequence_number=sequence_number,
        causal_deps=causal_deps,
        schema_version=schema_version,
        atomic_ops=atomic_ops,
        transaction_id=transaction_id,
        mutation_name=mutation_name,
    )
    return op, data_text, stamp


_SAFE_ID: Final = re.compile(r"[0-9A-Za-z._:-]*")


class _PlainBuilder:
    """What ``InsertBuilder`` and ``UpdateBuilder`` share: the parts of the hashed text that
    do not change for one node and collection, and the fast path itself."""

    def __init__(
        self,
        node_id: str,
        collection: str,
        schema_version: int,
        transaction_id: str | None,
        op_type: OpType,
    ) -> None:
        self.node_id = node_id
        self.collection = collection
        self.schema_version = schema_version
        self.transaction_id = transaction_id
        self._simple = (
            bool(node_id)
            and bool(collection)
            and _SAFE_ID.fullmatch(node_id) is not None
            and _SAFE_ID.fullmatch(collection) is not None
        )
        self._head = f'{{"collection":"{collection}","data":'
        self._node_part = f',"nodeId":"{node_id}","recordId":"'
        self._type = op_type
        self._tail = f'","type":"{op_type.value}"}}'
        #: The data's JSON of the operation ``build`` returned last (not a pair: one tuple
        #: less per operation for the garbage collector).
        self.text = ""

    def _build(
        self,
        safe_id: bool,
        record_id: str,
        data: Mapping[str, JsonValue],
        previous_data: dict[str, JsonValue] | None,
        timestamp: HLCTimestamp,
        stamp: str,
        sequence_number: int,
        causal_deps: tuple[str, ...],
        mutation_name: str | None,
    ) -> Operation:
        if self._simple and safe_id and type(data) is dict and _flat_and_plain(data) is True:
            data_text = encode_sorted(data)
            if data_text.isascii() or _HIGH_CHARACTER.search(data_text) is None:
                canonical = (
                    f'{self._head}{data_text}{self._node_part}{record_id}",'
                    f'"timestamp":"{stamp}{self._tail}'
                )
                op = new_operation(
                    hashlib.sha256(canonical.encode()).hexdigest(), self.node_id, self._type,
                    self.collection, record_id, dict(data), previous_data, timestamp,
                    sequence_number, causal_deps, self.schema_version, None,
                    self.transaction_id, mutation_name,
                )  # fmt: skip
                self.text = data_text
                return op
        op, text, _ = build_operation(
            node_id=self.node_id, op_type=self._type, collection=self.collection,
            record_id=record_id, data=data, previous_data=previous_data, timestamp=timestamp,
            sequence_number=sequence_number, causal_deps=causal_deps,
            schema_version=self.schema_version, atomic_ops=None,
            transaction_id=self.transaction_id, mutation_name=mutation_name,
        )  # fmt: skip
        assert text is not None
        self.text = text
        return op


class InsertBuilder(_PlainBuilder):
    """``build_operation`` for the inserts of one node into one collection, fast.

    The hot path of a local batch: a flat mapping of str keys to scalars, the op's deps
    given as JSON already.  Precomputes the parts of the hashed text that do not change.
    Whatever it is not certain of goes to ``build_operation`` (and on to
    ``create_operation``), so it gives exactly the same operation.
    """

    def __init__(
        self,
        node_id: str,
        collection: str,
        schema_version: int,
        transaction_id: str | None,
    ) -> None:
        super().__init__(node_id, collection, schema_version, transaction_id, OpType.INSERT)

    def build(
        self,
        record_id: str,
        data: Mapping[str, JsonValue],
        timestamp: HLCTimestamp,
        stamp: str,
        sequence_number: int,
        causal_deps: tuple[str, ...],
        mutation_name: str | None,
        safe_id: bool = False,
    ) -> Operation:
        """The insert (its data's JSON in ``text``).  ``stamp`` is ``timestamp`` serialized;
        ``safe_id`` says that ``record_id`` is non-empty and needs no JSON escaping (one of
        our UUIDs), else it is checked.

        Raises:
            ValidationError: As ``create_operation``.
        """
        safe = safe_id or _safe_record_id(record_id)
        return self._build(
            safe, record_id, data, None, timestamp, stamp, sequence_number, causal_deps,
            mutation_name,
        )  # fmt: skip


class UpdateBuilder(_PlainBuilder):
    """``build_operation`` for the plain updates (no atomic ops) of one node in one
    collection, fast: the same operation, built as ``InsertBuilder`` builds inserts.

    A transaction that updates records many times (an app transaction of 1,000 updates of
    one record) spends most of its planning here.  Whatever it is not certain of goes to
    ``build_operation`` (and on to ``create_operation``), so it gives exactly the same
    operation.
    """

    def __init__(
        self,
        node_id: str,
        collection: str,
        schema_version: int,
        transaction_id: str | None,
    ) -> None:
        super().__init__(node_id, collection, schema_version, transaction_id, OpType.UPDATE)
        #: The ``(record id, whether it is safe)`` checked last: a transaction that updates
        #: one record many times checks its id once.
        self._checked = ("", False)

    def build(
        self,
        record_id: str,
        data: dict[str, JsonValue],
        previous_data: dict[str, JsonValue],
        timestamp: HLCTimestamp,
        stamp: str,
        sequence_number: int,
        causal_deps: tuple[str, ...],
        mutation_name: str | None,
    ) -> Operation:
        """The update (its data's JSON in ``text``).  ``stamp`` is ``timestamp`` serialized;
        ``previous_data`` is a fresh dict the operation takes as it is.

        Raises:
            ValidationError: As ``create_operation``.
        """
        checked_id, safe = self._checked
        if checked_id != record_id:
            safe = _safe_record_id(record_id)
            self._checked = (record_id, safe)
        return self._build(
            safe, record_id, data, previous_data, timestamp, stamp, sequence_number,
            causal_deps, mutation_name,
        )  # fmt: skip
