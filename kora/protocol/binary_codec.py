"""``kora-pb1``: our binary wire format (proto/kora/sync/v1/sync.proto), encode and decode.

Every message round-trips exactly: ``decode(encode(m)) == m``, with integers staying ``int``
and floats staying ``float`` (``-0.0`` keeps its sign; NaN and infinities, which JSON cannot
carry either, are encoded as ``null`` the way ``JSON.stringify`` writes them).  The layout
tricks (string table, node table, raw ids, deltas, back-references) are described in the
``.proto`` file and in docs/protocol.md.

Decoding never trusts the frame: indexes are bounds-checked, raw ids must have their exact
length, counters must be safe integers, nesting is limited, and anything wrong raises a
``RemoteProtocolError`` (``BinaryDecodeError`` unless a more specific code applies).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NoReturn

import attrs
from google.protobuf.internal import api_implementation
from google.protobuf.message import DecodeError, EncodeError

from kora.core.hlc import MAX_LOGICAL, MAX_WALL_TIME, HLCTimestamp
from kora.core.json_types import JsonValue
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType
from kora.protocol._pb import sync_pb2 as pb
from kora.protocol.errors import (
    BinaryDecodeError,
    FrameTooLargeError,
    InvalidNumberError,
    InvalidOperationError,
    LocalProtocolError,
    NestingTooDeepError,
    OperationTooLargeError,
    RemoteProtocolError,
    TooManyOperationsError,
    UnknownMessageTypeError,
    VersionVectorTooLargeError,
    WrongTypeError,
)
from kora.protocol.limits import DEFAULT_LIMITS, MAX_SAFE_INTEGER, Limits
from kora.protocol.messages import (
    SIDE_CHANNEL_TYPES,
    Acknowledgment,
    AwarenessUpdate,
    BlobChunkPush,
    BlobChunkRequest,
    BlobChunkResponse,
    ErrorMessage,
    Handshake,
    HandshakeResponse,
    Message,
    OperationBatch,
    OperationRejected,
    YjsDocUpdate,
)

__all__ = ["BinaryCodec"]

_HASH: Final = re.compile(r"[0-9a-f]{64}")
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_KORA_BYTES: Final = "$koraBytes"

_OP_TYPES: Final = (OpType.INSERT, OpType.UPDATE, OpType.DELETE)
_OP_TYPE_CODES: Final = {t: i for i, t in enumerate(_OP_TYPES)}
_ATOMIC_TYPES: Final = (
    AtomicOpType.INCREMENT,
    AtomicOpType.MAX,
    AtomicOpType.MIN,
    AtomicOpType.APPEND,
    AtomicOpType.REMOVE,
)
_ATOMIC_TYPE_CODES: Final = {t: i for i, t in enumerate(_ATOMIC_TYPES)}
_NUMERIC_ATOMIC_TYPES: Final = frozenset(
    {AtomicOpType.INCREMENT, AtomicOpType.MAX, AtomicOpType.MIN}
)

# Depth of the containers right inside a message object, counted as the JSON codec counts
# them (the message object itself is depth 1), so one limit means the same in both formats.
_TOP: Final = 2
_OPERATION_DATA: Final = 4  # message > operations array > operation > data


def _uuid_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _canonical_b64(text: str) -> bytes | None:
    """The bytes of ``text`` if it is standard base64 that re-encodes to exactly ``text``."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def _fail(message: str) -> NoReturn:
    raise BinaryDecodeError(message)


class _Encoder:
    """Builds one Envelope; owns the frame's string table."""

    __slots__ = ("_index", "strings")

    def __init__(self) -> None:
        self.strings: list[str] = []
        self._index: dict[str, int] = {}

    def intern(self, text: str) -> int:
        index = self._index.get(text)
        if index is None:
            if type(text) is not str:
                raise LocalProtocolError(f"object keys must be str, got {text!r}")
            index = self._index[text] = len(self.strings)
            self.strings.append(text)
        return index

    # ------------------------------------------------------------ values

    def value(self, out: pb.Value, value: object) -> None:
        kind = type(value)
        if kind is str:
            out.string_value = value  # type: ignore[assignment]
        elif kind is bool:
            out.bool_value = value  # type: ignore[assignment]
        elif kind is int:
            if _INT64_MIN <= value <= _INT64_MAX:  # type: ignore[operator]
                out.int_value = value  # type: ignore[assignment]
            else:
                out.big_int_value = str(value)
        elif kind is float:
            if math.isfinite(value):  # type: ignore[arg-type]
                out.double_value = value  # type: ignore[assignment]
            else:
                out.null_value = pb.NULL_VALUE  # JSON.stringify writes null
        elif value is None:
            out.null_value = pb.NULL_VALUE
        elif isinstance(value, Mapping):
            if len(value) == 1 and _KORA_BYTES in value:
                tagged = value[_KORA_BYTES]
                raw = _canonical_b64(tagged) if type(tagged) is str else None
                if raw is not None:
                    out.kora_bytes = raw
                    return
            out.container = pb.CONTAINER_OBJECT
            keys = out.keys
            items = out.items
            intern = self.intern
            for key, member in value.items():
                keys.append(intern(key))
                self.value(items.add(), member)
        elif isinstance(value, list | tuple):
            out.container = pb.CONTAINER_ARRAY
            items = out.items
            for member in value:
                self.value(items.add(), member)
        elif isinstance(value, bool):  # subclasses of the scalar types (IntEnum, StrEnum...)
            out.bool_value = bool(value)
        elif isinstance(value, int):
            self.value(out, int(value))
        elif isinstance(value, float):
            self.value(out, float(value))
        elif isinstance(value, str):
            out.string_value = str(value)
        else:
            raise LocalProtocolError(f"not a JSON value: {type(value).__name__}")

    def map(self, out: pb.Map, mapping: Mapping[str, Any]) -> None:
        out.SetInParent()  # an empty object is present, unlike null
        keys = out.keys
        values = out.values
        intern = self.intern
        value = self.value
        for key, member in mapping.items():
            keys.append(intern(key))
            value(values.add(), member)

    # ------------------------------------------------------------ messages

    def handshake(self, out: pb.Handshake, m: Handshake) -> None:
        _put_id(out, "node_uuid", "node_text", m.node_id)
        _put_version_vector(out.version_vector, m.version_vector)
        out.schema_version = m.schema_version
        if m.auth_token is not None:
            out.auth_token = m.auth_token
        if m.supported_wire_formats is not None:
            out.supported_wire_formats.SetInParent()
            out.supported_wire_formats.values.extend(m.supported_wire_formats)
        if m.sync_scope is not None:
            self.map(out.sync_scope, m.sync_scope)
        if m.sync_queries is not None:
            self.value(out.sync_queries, list(m.sync_queries))
        if m.delta_cursor is not None:
            out.delta_cursor = m.delta_cursor
        if m.last_delivery_sequence is not None:
            out.last_delivery_sequence = m.last_delivery_sequence

    def handshake_response(self, out: pb.HandshakeResponse, m: HandshakeResponse) -> None:
        _put_id(out, "node_uuid", "node_text", m.node_id)
        _put_version_vector(out.version_vector, m.version_vector)
        out.schema_version = m.schema_version
        out.accepted = m.accepted
        if m.reject_reason is not None:
            out.reject_reason = m.reject_reason
        if m.supported_schema_min is not None:
            out.supported_schema_min = m.supported_schema_min
        if m.supported_schema_max is not None:
            out.supported_schema_max = m.supported_schema_max
        if m.selected_wire_format is not None:
            out.selected_wire_format = m.selected_wire_format
        if m.server_time is not None:
            out.server_time = m.server_time
        if m.server_max_delivery_sequence is not None:
            out.server_max_delivery_sequence = m.server_max_delivery_sequence
        if m.blob_storage_enabled is not None:
            out.blob_storage_enabled = m.blob_storage_enabled
        if m.accepted_scope is not None:
            self.map(out.accepted_scope, m.accepted_scope)

    def operation_batch(self, out: pb.OperationBatch, m: OperationBatch) -> None:
        nodes: dict[str, int] = {}
        node_table = out.nodes

        def node_index(node_id: str) -> int:
            index = nodes.get(node_id)
            if index is None:
                index = nodes[node_id] = len(nodes)
                entry = node_table.add()
                _put_id(entry, "uuid", "text", node_id)
            return index

        intern = self.intern
        put_map = self.map
        add = out.operations.add
        positions: dict[str, int] = {}  # op id -> index in this batch, for back-references
        previous_wall = 0
        previous_seq = 0
        for position, op in enumerate(m.operations):
            p = add()
            op_id = op.id
            if _HASH.fullmatch(op_id):
                p.id = bytes.fromhex(op_id)
            else:
                p.id_text = op_id
            node = node_index(op.node_id)
            if node:
                p.node = node
            op_type = _OP_TYPE_CODES[op.type]
            if op_type:
                p.type = op_type
            p.collection = intern(op.collection)
            record_id = op.record_id
            if _UUID.fullmatch(record_id):
                p.record_uuid = bytes.fromhex(record_id.replace("-", ""))
            else:
                p.record_text = record_id
            if op.data is not None:
                put_map(p.data, op.data)
            if op.previous_data is not None:
                put_map(p.previous_data, op.previous_data)
            ts = op.timestamp
            if ts.wall_time < 0 or op.sequence_number < 0:
                raise LocalProtocolError(f"operation {op_id!r} has a negative wallTime or seq")
            p.wall_time_delta = ts.wall_time - previous_wall
            previous_wall = ts.wall_time
            if ts.logical:
                p.logical = ts.logical
            if ts.node_id != op.node_id:
                p.timestamp_node = node_index(ts.node_id)
            p.sequence_delta = op.sequence_number - previous_seq
            previous_seq = op.sequence_number
            if op.causal_deps:
                refs = p.dep_refs
                for dep in op.causal_deps:
                    earlier = positions.get(dep)
                    if earlier is not None:
                        refs.append(position - earlier + 1)
                    elif _HASH.fullmatch(dep):
                        refs.append(0)
                        p.dep_hashes.append(bytes.fromhex(dep))
                    else:
                        refs.append(1)
                        p.dep_texts.append(dep)
            if op.schema_version != 1:
                p.schema_version = op.schema_version
            if op.atomic_ops is not None:
                atomic = p.atomic_ops
                atomic.SetInParent()
                for field, atomic_op in op.atomic_ops.items():
                    atomic.fields.append(intern(field))
                    atomic.types.append(_ATOMIC_TYPE_CODES[atomic_op.type])
                    self.value(atomic.values.add(), atomic_op.value)
            if op.transaction_id is not None:
                p.transaction_id = op.transaction_id
            if op.mutation_name is not None:
                p.mutation_name = op.mutation_name
            positions[op_id] = position
        out.is_final = m.is_final
        out.batch_index = m.batch_index
        if m.cursor is not None:
            out.cursor = m.cursor
        if m.total_batches is not None:
            out.total_batches = m.total_batches
        if m.base_delivery_sequence is not None:
            out.base_delivery_sequence = m.base_delivery_sequence
        if m.max_delivery_sequence is not None:
            out.max_delivery_sequence = m.max_delivery_sequence

    def acknowledgment(self, out: pb.Acknowledgment, m: Acknowledgment) -> None:
        _put_id(out, "acknowledged_uuid", "acknowledged_text", m.acknowledged_message_id)
        out.last_sequence_number = m.last_sequence_number
        if m.delivery_sequence is not None:
            out.delivery_sequence = m.delivery_sequence

    def error(self, out: pb.Error, m: ErrorMessage) -> None:
        out.code = m.code
        out.message = m.message
        out.retriable = m.retriable

    def operation_rejected(self, out: pb.OperationRejected, m: OperationRejected) -> None:
        if _HASH.fullmatch(m.operation_id):
            out.operation_id = bytes.fromhex(m.operation_id)
        else:
            out.operation_id_text = m.operation_id
        out.collection = m.collection
        _put_id(out, "record_uuid", "record_text", m.record_id)
        out.code = m.code
        out.message = m.message
        out.retriable = m.retriable

    def awareness_update(self, out: pb.AwarenessUpdate, m: AwarenessUpdate) -> None:
        if type(m.client_id) is float:
            out.client_double = m.client_id
        else:
            out.client_int = m.client_id  # type: ignore[assignment]
        self.map(out.states, m.states)

    def yjs_doc_update(self, out: pb.YjsDocUpdate, m: YjsDocUpdate) -> None:
        out.collection = m.collection
        _put_id(out, "record_uuid", "record_text", m.record_id)
        out.field = m.field
        raw = _canonical_b64(m.update)
        if raw is None:
            out.update_text = m.update
        else:
            out.update = raw

    def blob_chunk_request(self, out: pb.BlobChunkRequest, m: BlobChunkRequest) -> None:
        out.request_id = m.request_id
        _put_hash(out, m.hash)

    def blob_chunk_response(self, out: pb.BlobChunkResponse, m: BlobChunkResponse) -> None:
        out.request_id = m.request_id
        if m.bytes is not None:
            _put_chunk(out, m.bytes)

    def blob_chunk_push(self, out: pb.BlobChunkPush, m: BlobChunkPush) -> None:
        _put_hash(out, m.hash)
        _put_chunk(out, m.bytes)


def _put_id(out: Any, uuid_field: str, text_field: str, value: str) -> None:
    if _UUID.fullmatch(value):
        setattr(out, uuid_field, bytes.fromhex(value.replace("-", "")))
    else:
        setattr(out, text_field, value)


def _put_hash(out: Any, value: str) -> None:
    if _HASH.fullmatch(value):
        out.hash = bytes.fromhex(value)
    else:
        out.hash_text = value


def _put_chunk(out: Any, text: str) -> None:
    raw = _canonical_b64(text)
    if raw is None:
        out.chunk_text = text
    else:
        out.chunk = raw


def _put_version_vector(out: Any, vector: Mapping[str, int]) -> None:
    add = out.add
    for node, seq in vector.items():
        if _UUID.fullmatch(node):
            add(node_uuid=bytes.fromhex(node.replace("-", "")), sequence=seq)
        else:
            add(node_text=node, sequence=seq)


# ---------------------------------------------------------------- decoding


def _get_id(uuid_raw: bytes, text: str, what: str) -> str:
    if text:
        if uuid_raw:
            _fail(f"{what} has both a UUID and a text form")
        return text
    if not uuid_raw:
        return ""
    if len(uuid_raw) != 16:
        _fail(f"{what} UUID has {len(uuid_raw)} bytes, expected 16")
    return _uuid_text(uuid_raw)


def _get_hash(raw: bytes, text: str, what: str) -> str:
    if text:
        if raw:
            _fail(f"{what} has both a raw and a text form")
        return text
    if not raw:
        return ""
    if len(raw) != 32:
        _fail(f"{what} has {len(raw)} bytes, expected 32")
    return raw.hex()


def _safe(value: int, what: str) -> int:
    if value > MAX_SAFE_INTEGER:
        raise InvalidNumberError(f"{what} {value} is beyond 2**53 - 1")
    return value


def _safe_signed(value: int, what: str) -> int:
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise InvalidNumberError(f"{what} {value} is beyond +-(2**53 - 1)")
    return value


class _Decoder:
    """Turns one parsed Envelope back into a message."""

    __slots__ = ("limits", "strings")

    def __init__(self, strings: Sequence[str], limits: Limits) -> None:
        self.strings = strings
        self.limits = limits

    def string(self, index: int) -> str:
        try:
            return self.strings[index]
        except IndexError:
            _fail(f"string index {index} is outside the string table")

    def value(self, v: pb.Value, depth: int) -> JsonValue:
        kind = v.WhichOneof("kind")
        if kind == "container":
            if depth > self.limits.max_nesting_depth:
                raise NestingTooDeepError(
                    f"values nest deeper than {self.limits.max_nesting_depth} levels"
                )
            items = v.items
            keys = v.keys
            if v.container == pb.CONTAINER_ARRAY:
                if keys:
                    _fail("an array Value has keys")
                return [self.value(item, depth + 1) for item in items]
            if v.container != pb.CONTAINER_OBJECT:
                _fail(f"unknown container kind {v.container}")
            if len(keys) != len(items):
                _fail("an object Value has different numbers of keys and items")
            return self.members(keys, items, depth)
        if v.items or v.keys:
            _fail(f"a scalar Value ({kind}) has items or keys")
        if kind == "string_value":
            return v.string_value
        if kind == "int_value":
            return v.int_value
        if kind == "bool_value":
            return v.bool_value
        if kind == "null_value":
            return None
        if kind == "double_value":
            number = v.double_value
            if not math.isfinite(number):
                raise InvalidNumberError("NaN or infinity in a value")
            return number
        if kind == "kora_bytes":
            return {_KORA_BYTES: base64.b64encode(v.kora_bytes).decode("ascii")}
        if kind == "big_int_value":
            text = v.big_int_value
            if not re.fullmatch(r"-?[1-9][0-9]{0,4299}", text):
                raise InvalidNumberError("big integer value is not a decimal integer")
            number = int(text)
            if _INT64_MIN <= number <= _INT64_MAX:
                _fail("big integer value fits in int64")
            return number
        _fail("a Value has no kind")

    def members(
        self, keys: Sequence[int], values: Sequence[pb.Value], depth: int
    ) -> dict[str, JsonValue]:
        strings = self.strings
        value = self.value
        result: dict[str, JsonValue] = {}
        try:
            for key, member in zip(keys, values, strict=True):
                name = strings[key]
                if name in result:
                    _fail(f"duplicate key {name!r} in an object")
                result[name] = value(member, depth + 1)
        except IndexError:
            _fail("object key index is outside the string table")
        except ValueError:
            _fail("an object has different numbers of keys and values")
        return result

    def map(self, m: pb.Map, depth: int) -> dict[str, JsonValue]:
        if depth > self.limits.max_nesting_depth:
            raise NestingTooDeepError(f"values nest deeper than {self.limits.max_nesting_depth}")
        return self.members(m.keys, m.values, depth)

    def scope(self, m: pb.Map) -> dict[str, Any]:
        scope = self.map(m, _TOP)
        for collection, fields in scope.items():
            if not isinstance(fields, dict):
                raise WrongTypeError(f"scope of collection {collection!r} is not an object")
        return scope

    def version_vector(self, entries: Sequence[pb.VersionEntry]) -> dict[str, int]:
        if len(entries) > self.limits.max_version_vector_entries:
            raise VersionVectorTooLargeError(
                f"version vector has {len(entries)} entries "
                f"(limit {self.limits.max_version_vector_entries})"
            )
        vector: dict[str, int] = {}
        for entry in entries:
            node = _get_id(entry.node_uuid, entry.node_text, "version vector node")
            if node in vector:
                _fail(f"version vector repeats node {node!r}")
            vector[node] = _safe(entry.sequence, "version vector sequence")
        return vector

    # ------------------------------------------------------------ messages

    def handshake(self, message_id: str, h: pb.Handshake) -> Handshake:
        queries: tuple[dict[str, Any], ...] | None = None
        if h.HasField("sync_queries"):
            raw = self.value(h.sync_queries, _TOP)
            if not isinstance(raw, list) or not all(isinstance(q, dict) for q in raw):
                raise WrongTypeError("syncQueries is not an array of objects")
            queries = tuple(raw)  # type: ignore[arg-type]
        return Handshake(
            message_id=message_id,
            node_id=_get_id(h.node_uuid, h.node_text, "nodeId"),
            version_vector=self.version_vector(h.version_vector),
            schema_version=_safe_signed(h.schema_version, "schemaVersion"),
            auth_token=h.auth_token if h.HasField("auth_token") else None,
            supported_wire_formats=(
                tuple(h.supported_wire_formats.values)
                if h.HasField("supported_wire_formats")
                else None
            ),
            sync_scope=self.scope(h.sync_scope) if h.HasField("sync_scope") else None,
            sync_queries=queries,
            delta_cursor=h.delta_cursor if h.HasField("delta_cursor") else None,
            last_delivery_sequence=(
                _safe(h.last_delivery_sequence, "lastDeliverySequence")
                if h.HasField("last_delivery_sequence")
                else None
            ),
        )

    def handshake_response(self, message_id: str, r: pb.HandshakeResponse) -> HandshakeResponse:
        def optional(name: str, check: Callable[[int, str], int] = _safe) -> int | None:
            return check(getattr(r, name), name) if r.HasField(name) else None

        return HandshakeResponse(
            message_id=message_id,
            node_id=_get_id(r.node_uuid, r.node_text, "nodeId"),
            version_vector=self.version_vector(r.version_vector),
            schema_version=_safe_signed(r.schema_version, "schemaVersion"),
            accepted=r.accepted,
            reject_reason=r.reject_reason if r.HasField("reject_reason") else None,
            supported_schema_min=optional("supported_schema_min", _safe_signed),
            supported_schema_max=optional("supported_schema_max", _safe_signed),
            selected_wire_format=(
                r.selected_wire_format if r.HasField("selected_wire_format") else None
            ),
            server_time=optional("server_time"),
            server_max_delivery_sequence=optional("server_max_delivery_sequence"),
            blob_storage_enabled=(
                r.blob_storage_enabled if r.HasField("blob_storage_enabled") else None
            ),
            accepted_scope=self.scope(r.accepted_scope) if r.HasField("accepted_scope") else None,
        )

    def operation_batch(
        self, message_id: str, b: pb.OperationBatch, frame_size: int
    ) -> OperationBatch:
        limits = self.limits
        wire_ops = b.operations
        if len(wire_ops) > limits.max_operations_per_batch:
            raise TooManyOperationsError(
                f"batch holds {len(wire_ops)} operations (limit {limits.max_operations_per_batch})"
            )
        # An operation cannot be larger than the frame that holds it.
        check_size = frame_size > limits.max_operation_bytes
        nodes = [_get_id(n.uuid, n.text, "node id") for n in b.nodes]
        node_count = len(nodes)
        strings = self.strings
        string_count = len(strings)
        members = self.members
        operations: list[Operation] = []
        ids: list[str] = []
        wall = 0
        seq = 0
        for position, p in enumerate(wire_ops):
            if check_size and p.ByteSize() > limits.max_operation_bytes:
                raise OperationTooLargeError(
                    f"operation {position} has {p.ByteSize()} bytes "
                    f"(limit {limits.max_operation_bytes})"
                )
            op_id = _get_hash(p.id, p.id_text, "operation id")
            node_index = p.node
            collection_index = p.collection
            if node_index >= node_count or collection_index >= string_count:
                _fail(f"operation {position} refers to a missing node or collection")
            node_id = nodes[node_index]
            try:
                op_type = _OP_TYPES[p.type]
            except IndexError:
                _fail(f"operation {position} has unknown type {p.type}")
            wall += p.wall_time_delta
            seq += p.sequence_delta
            if not 0 <= wall <= MAX_SAFE_INTEGER or not 0 <= seq <= MAX_SAFE_INTEGER:
                raise InvalidNumberError(
                    f"operation {position}: wallTime {wall} or sequenceNumber {seq} "
                    "is not a safe non-negative integer"
                )
            if p.HasField("timestamp_node"):
                if p.timestamp_node >= node_count:
                    _fail(f"operation {position} refers to a missing timestamp node")
                ts_node = nodes[p.timestamp_node]
            else:
                ts_node = node_id
            refs = p.dep_refs
            deps: tuple[str, ...] = ()
            if refs:
                deps = self.dependencies(position, refs, p.dep_hashes, p.dep_texts, ids)
            elif p.dep_hashes or p.dep_texts:
                _fail(f"operation {position} has dependency ids but no dependency refs")
            atomic_ops: dict[str, AtomicOp] | None = None
            if p.HasField("atomic_ops"):
                atomic_ops = self.atomic_ops(p.atomic_ops)
            op = Operation(
                id=op_id,
                node_id=node_id,
                type=op_type,
                collection=strings[collection_index],
                record_id=_get_id(p.record_uuid, p.record_text, "recordId"),
                data=(
                    members(p.data.keys, p.data.values, _OPERATION_DATA)
                    if p.HasField("data")
                    else None
                ),
                previous_data=(
                    members(p.previous_data.keys, p.previous_data.values, _OPERATION_DATA)
                    if p.HasField("previous_data")
                    else None
                ),
                timestamp=HLCTimestamp(wall, _safe(p.logical, "logical"), ts_node),
                sequence_number=seq,
                causal_deps=deps,
                schema_version=(
                    _safe(p.schema_version, "schemaVersion") if p.HasField("schema_version") else 1
                ),
                atomic_ops=atomic_ops,
                transaction_id=p.transaction_id if p.HasField("transaction_id") else None,
                mutation_name=p.mutation_name if p.HasField("mutation_name") else None,
            )
            _check_operation(op, position)
            operations.append(op)
            ids.append(op_id)
        return OperationBatch(
            message_id=message_id,
            operations=tuple(operations),
            is_final=b.is_final,
            batch_index=_safe(b.batch_index, "batchIndex"),
            cursor=b.cursor if b.HasField("cursor") else None,
            total_batches=(
                _safe(b.total_batches, "totalBatches") if b.HasField("total_batches") else None
            ),
            base_delivery_sequence=(
                _safe(b.base_delivery_sequence, "baseDeliverySequence")
                if b.HasField("base_delivery_sequence")
                else None
            ),
            max_delivery_sequence=(
                _safe(b.max_delivery_sequence, "maxDeliverySequence")
                if b.HasField("max_delivery_sequence")
                else None
            ),
        )

    @staticmethod
    def dependencies(
        position: int,
        refs: Sequence[int],
        hashes: Sequence[bytes],
        texts: Sequence[str],
        ids: Sequence[str],
    ) -> tuple[str, ...]:
        deps: list[str] = []
        next_hash = next_text = 0
        try:
            for ref in refs:
                if ref == 0:
                    raw = hashes[next_hash]
                    next_hash += 1
                    if len(raw) != 32:
                        _fail(f"operation {position}: dependency id has {len(raw)} bytes")
                    deps.append(raw.hex())
                elif ref == 1:
                    deps.append(texts[next_text])
                    next_text += 1
                else:
                    earlier = position - ref + 1
                    if earlier < 0:
                        _fail(f"operation {position}: dependency refers before the batch")
                    deps.append(ids[earlier])
        except IndexError:
            _fail(f"operation {position}: more dependency refs than dependency ids")
        if next_hash != len(hashes) or next_text != len(texts):
            _fail(f"operation {position}: unused dependency ids")
        return tuple(deps)

    def atomic_ops(self, a: pb.AtomicOps) -> dict[str, AtomicOp]:
        fields, types, values = a.fields, a.types, a.values
        if not len(fields) == len(types) == len(values):
            _fail("atomicOps has different numbers of fields, types and values")
        result: dict[str, AtomicOp] = {}
        for field_index, type_code, member in zip(fields, types, values, strict=True):
            name = self.string(field_index)
            if name in result:
                _fail(f"atomicOps repeats field {name!r}")
            if not 0 <= type_code < len(_ATOMIC_TYPES):
                _fail(f"unknown atomic op type {type_code}")
            result[name] = AtomicOp(
                _ATOMIC_TYPES[type_code], self.value(member, _OPERATION_DATA + 1)
            )
        return result

    def acknowledgment(self, message_id: str, a: pb.Acknowledgment) -> Acknowledgment:
        return Acknowledgment(
            message_id=message_id,
            acknowledged_message_id=_get_id(
                a.acknowledged_uuid, a.acknowledged_text, "acknowledgedMessageId"
            ),
            last_sequence_number=_safe(a.last_sequence_number, "lastSequenceNumber"),
            delivery_sequence=(
                _safe(a.delivery_sequence, "deliverySequence")
                if a.HasField("delivery_sequence")
                else None
            ),
        )

    def error(self, message_id: str, e: pb.Error) -> ErrorMessage:
        return ErrorMessage(
            message_id=message_id, code=e.code, message=e.message, retriable=e.retriable
        )

    def operation_rejected(self, message_id: str, r: pb.OperationRejected) -> OperationRejected:
        return OperationRejected(
            message_id=message_id,
            operation_id=_get_hash(r.operation_id, r.operation_id_text, "operationId"),
            collection=r.collection,
            record_id=_get_id(r.record_uuid, r.record_text, "recordId"),
            code=r.code,
            message=r.message,
            retriable=r.retriable,
        )

    def awareness_update(self, message_id: str, a: pb.AwarenessUpdate) -> AwarenessUpdate:
        kind = a.WhichOneof("client_id")
        client_id: int | float
        if kind == "client_int":
            client_id = _safe_signed(a.client_int, "clientId")
        elif kind == "client_double":
            client_id = a.client_double
            if not math.isfinite(client_id):
                raise InvalidNumberError("clientId is not finite")
        else:
            _fail("awareness-update has no clientId")
        return AwarenessUpdate(
            message_id=message_id, client_id=client_id, states=self.map(a.states, _TOP)
        )

    def yjs_doc_update(self, message_id: str, y: pb.YjsDocUpdate) -> YjsDocUpdate:
        if y.HasField("update_text"):
            if y.update:
                _fail("yjs-doc-update has both a raw and a text update")
            update = y.update_text
        else:
            update = base64.b64encode(y.update).decode("ascii")
        return YjsDocUpdate(
            message_id=message_id,
            collection=y.collection,
            record_id=_get_id(y.record_uuid, y.record_text, "recordId"),
            field=y.field,
            update=update,
        )

    def blob_chunk_request(self, message_id: str, r: pb.BlobChunkRequest) -> BlobChunkRequest:
        return BlobChunkRequest(
            message_id=message_id,
            request_id=r.request_id,
            hash=_get_hash(r.hash, r.hash_text, "hash"),
        )

    def blob_chunk_response(self, message_id: str, r: pb.BlobChunkResponse) -> BlobChunkResponse:
        return BlobChunkResponse(
            message_id=message_id, request_id=r.request_id, bytes=_get_chunk(r, optional=True)
        )

    def blob_chunk_push(self, message_id: str, p: pb.BlobChunkPush) -> BlobChunkPush:
        chunk = _get_chunk(p, optional=False)
        assert chunk is not None
        return BlobChunkPush(
            message_id=message_id, hash=_get_hash(p.hash, p.hash_text, "hash"), bytes=chunk
        )


def _check_operation(op: Operation, position: int) -> None:
    """What ``operation_from_wire`` checks beyond shape, so both formats accept the same ops."""
    problem = None
    if not (op.id and op.node_id and op.collection and op.record_id):
        problem = "id, nodeId, collection and recordId must be non-empty"
    elif op.timestamp.wall_time >= MAX_WALL_TIME or op.timestamp.logical > MAX_LOGICAL:
        problem = f"timestamp {op.timestamp} is out of range"
    elif op.schema_version < 1:
        problem = "schemaVersion must be at least 1"
    elif op.type is OpType.DELETE and op.data is not None:
        problem = "a delete has no data"
    elif op.type is not OpType.DELETE and op.data is None:
        problem = f"an {op.type} needs data"
    elif op.type is OpType.UPDATE and op.previous_data is None:
        problem = "an update needs previousData"
    elif op.atomic_ops:
        for field, atomic in op.atomic_ops.items():
            value = atomic.value
            if atomic.type in _NUMERIC_ATOMIC_TYPES and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                problem = f"atomicOps.{field} {atomic.type} needs a number"
    if problem is not None:
        raise InvalidOperationError(f"operation {position}: {problem}")


def _get_chunk(m: Any, *, optional: bool) -> str | None:
    has_text = m.HasField("chunk_text")
    has_raw = m.HasField("chunk") if optional else bool(m.chunk)
    if has_text:
        if has_raw:
            _fail("blob chunk has both a raw and a text form")
        return str(m.chunk_text)
    if optional and not has_raw:
        return None
    return base64.b64encode(m.chunk).decode("ascii")


class BinaryCodec:
    """Encode and decode ``kora-pb1`` frames.

    Args:
        limits: What ``decode`` accepts at most.

    Raises:
        LocalProtocolError: If the protobuf runtime is not the ``upb`` backend (the pure
            Python one has known recursion and speed problems on untrusted input).
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        if api_implementation.Type() != "upb":
            raise LocalProtocolError(
                "the binary codec needs protobuf's upb backend, found "
                f"{api_implementation.Type()!r} (unset PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION)"
            )
        self.limits = limits

    def encode(self, message: Message) -> bytes:
        """One binary frame for ``message``.

        Raises:
            LocalProtocolError: If the message holds something the format cannot carry
                (a value that is not JSON, a negative counter, a lone surrogate).
        """
        name = _FIELD_OF_TYPE.get(getattr(message, "TYPE", None))  # type: ignore[arg-type]
        if name is None:
            raise LocalProtocolError(f"not a protocol message: {message!r}")
        encoder = _Encoder()
        envelope = pb.Envelope()
        try:
            _put_id(envelope, "message_uuid", "message_id", message.message_id)
            body = getattr(envelope, name)
            body.SetInParent()
            getattr(encoder, name)(body, message)
            if message.extra:
                encoder.map(envelope.extra, message.extra)
            envelope.strings.extend(encoder.strings)
            frame: bytes = envelope.SerializeToString()
        except (TypeError, ValueError, KeyError, AttributeError, EncodeError) as exc:
            raise LocalProtocolError(f"cannot encode {message.TYPE}: {exc}") from exc
        return frame

    def decode(self, frame: bytes | bytearray | memoryview) -> Message:
        """The message of one binary frame.

        Raises:
            RemoteProtocolError: If the frame is too large, malformed or breaks a limit.
                Errors in side-channel messages are not ``fatal``.
        """
        size = len(frame)
        if size > self.limits.max_frame_bytes:
            raise FrameTooLargeError(
                f"frame of {size} bytes exceeds the limit of {self.limits.max_frame_bytes}"
            )
        envelope = pb.Envelope()
        try:
            envelope.ParseFromString(bytes(frame))
        except (DecodeError, RuntimeError, ValueError, TypeError) as exc:
            raise BinaryDecodeError(f"not a kora-pb1 frame: {exc}") from exc
        name = envelope.WhichOneof("message")
        if name is None:
            raise UnknownMessageTypeError("binary frame carries no known message")
        message_type = _TYPE_OF_FIELD[name]
        try:
            message_id = _get_id(envelope.message_uuid, envelope.message_id, "messageId")
            decoder = _Decoder(envelope.strings, self.limits)
            body = getattr(envelope, name)
            if name == "operation_batch":
                message: Message = decoder.operation_batch(message_id, body, size)
            else:
                message = getattr(decoder, name)(message_id, body)
            if envelope.HasField("extra"):
                extra = decoder.map(envelope.extra, 1)
                message = _with_extra(message, extra)
            return message
        except RemoteProtocolError as exc:
            if message_type in SIDE_CHANNEL_TYPES:
                exc.fatal = False
            raise
        except RecursionError as exc:  # defensive: the depth checks above come first
            raise NestingTooDeepError("values nest too deeply") from exc


def _with_extra(message: Message, extra: dict[str, JsonValue]) -> Message:
    return attrs.evolve(message, extra=extra)


_FIELD_OF_TYPE: Final = {
    Handshake.TYPE: "handshake",
    HandshakeResponse.TYPE: "handshake_response",
    OperationBatch.TYPE: "operation_batch",
    Acknowledgment.TYPE: "acknowledgment",
    ErrorMessage.TYPE: "error",
    OperationRejected.TYPE: "operation_rejected",
    AwarenessUpdate.TYPE: "awareness_update",
    YjsDocUpdate.TYPE: "yjs_doc_update",
    BlobChunkRequest.TYPE: "blob_chunk_request",
    BlobChunkResponse.TYPE: "blob_chunk_response",
    BlobChunkPush.TYPE: "blob_chunk_push",
}
_TYPE_OF_FIELD: Final = {field: type_ for type_, field in _FIELD_OF_TYPE.items()}
