"""kora-pb1 encoding: messages into an ``Envelope`` (see proto/kora/sync/v1/sync.proto).

Written for speed: scalar values go through one ``add(kind=value)`` call each, and the
frame's string table is filled as keys are met.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kora.protocol._binary_common import (
    ATOMIC_TYPE_CODES,
    HASH,
    INT64_MAX,
    INT64_MIN,
    KORA_BYTES,
    OP_TYPE_CODES,
    canonical_b64,
    uuid_bytes,
)
from kora.protocol._binary_common import (
    MAP_DOUBLE as _DOUBLE,
)
from kora.protocol._binary_common import (
    MAP_FALSE as _FALSE,
)
from kora.protocol._binary_common import (
    MAP_INT as _INT,
)
from kora.protocol._binary_common import (
    MAP_NULL as _NULL,
)
from kora.protocol._binary_common import (
    MAP_STR as _STR,
)
from kora.protocol._binary_common import (
    MAP_TRUE as _TRUE,
)
from kora.protocol._binary_common import (
    MAP_VALUE as _VALUE,
)
from kora.protocol._pb import sync_pb2 as pb
from kora.protocol.errors import LocalProtocolError
from kora.protocol.messages import (
    Acknowledgment,
    AwarenessUpdate,
    BlobChunkPush,
    BlobChunkRequest,
    BlobChunkResponse,
    ErrorMessage,
    Handshake,
    HandshakeResponse,
    OperationBatch,
    OperationRejected,
    YjsDocUpdate,
)


def put_id(out: Any, uuid_field: str, text_field: str, value: str) -> None:
    raw = uuid_bytes(value)
    if raw is None:
        setattr(out, text_field, value)
    else:
        setattr(out, uuid_field, raw)


def _put_hash(out: Any, value: str) -> None:
    if HASH.fullmatch(value):
        out.hash = bytes.fromhex(value)
    else:
        out.hash_text = value


def _put_chunk(out: Any, text: str) -> None:
    raw = canonical_b64(text)
    if raw is None:
        out.chunk_text = text
    else:
        out.chunk = raw


def _put_version_vector(out: Any, vector: Mapping[str, int]) -> None:
    add = out.add
    for node, seq in vector.items():
        raw = uuid_bytes(node)
        if raw is None:
            add(node_text=node, sequence=seq)
        else:
            add(node_uuid=raw, sequence=seq)


class _Columns:
    """The columns of a ``Map`` being filled, possibly from several objects in a row."""

    __slots__ = ("doubles", "encoder", "ints", "keys", "kinds", "out", "strs")

    def __init__(self, encoder: Encoder, out: pb.Map) -> None:
        self.encoder = encoder
        self.out = out
        self.keys: list[int] = []
        self.kinds = bytearray()
        self.ints: list[int] = []
        self.strs: list[str] = []
        self.doubles: list[float] = []

    def add(self, mapping: Mapping[str, Any]) -> None:
        """Append the members of ``mapping``."""
        encoder = self.encoder
        index = encoder._index
        intern = encoder.intern
        keys = self.keys
        kinds = self.kinds
        for key, member in mapping.items():
            position = index.get(key)
            keys.append(intern(key) if position is None else position)
            kind = type(member)
            if kind is str:
                kinds.append(_STR)
                self.strs.append(member)
            elif kind is bool:
                kinds.append(_TRUE if member else _FALSE)
            elif kind is int and INT64_MIN <= member <= INT64_MAX:
                kinds.append(_INT)
                self.ints.append(member)
            elif member is None:
                kinds.append(_NULL)
            elif kind is float and member - member == 0:
                kinds.append(_DOUBLE)
                self.doubles.append(member)
            else:
                kinds.append(_VALUE)
                encoder.value(self.out.values.add(), member)

    def write(self) -> None:
        """Store the columns in the ``Map`` (a few calls in all)."""
        out = self.out
        if self.keys:
            out.keys.extend(self.keys)
            out.kinds = bytes(self.kinds)
        if self.ints:
            out.ints.extend(self.ints)
        if self.strs:
            out.strs.extend(self.strs)
        if self.doubles:
            out.doubles.extend(self.doubles)


class Encoder:
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
        """Fill ``out`` (a fresh Value) with any JSON value."""
        kind = type(value)
        # ``type(v) is`` is faster than isinstance but does not narrow for mypy.
        if kind is str:
            out.string_value = value  # type: ignore[assignment]
        elif kind is bool:
            out.bool_value = value  # type: ignore[assignment]
        elif kind is int:
            if INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
                out.int_value = value  # type: ignore[assignment]
            else:
                out.big_int_value = str(value)
        elif kind is float:
            if value - value == 0:  # type: ignore[operator]  # finite
                out.double_value = value  # type: ignore[assignment]
            else:
                out.null_value = pb.NULL_VALUE  # as JSON.stringify writes NaN/Infinity
        elif value is None:
            out.null_value = pb.NULL_VALUE
        elif isinstance(value, Mapping):
            if len(value) == 1 and KORA_BYTES in value:
                tagged = value[KORA_BYTES]
                raw = canonical_b64(tagged) if type(tagged) is str else None
                if raw is not None:
                    out.kora_bytes = raw
                    return
            out.container = pb.CONTAINER_OBJECT
            keys = out.keys
            add = out.items.add
            intern = self.intern
            for key, member in value.items():
                keys.append(intern(key))
                self.value(add(), member)
        elif isinstance(value, list | tuple):
            out.container = pb.CONTAINER_ARRAY
            add = out.items.add
            for member in value:
                self.value(add(), member)
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
        """Fill ``out`` with an object; present even when empty (unlike null)."""
        out.SetInParent()
        columns = _Columns(self, out)
        columns.add(mapping)
        columns.write()

    # ------------------------------------------------------------ messages

    def handshake(self, out: pb.Handshake, m: Handshake) -> None:
        put_id(out, "node_uuid", "node_text", m.node_id)
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
        put_id(out, "node_uuid", "node_text", m.node_id)
        _put_version_vector(out.version_vector, m.version_vector)
        out.schema_version = m.schema_version
        out.accepted = m.accepted
        for name in (
            "reject_reason",
            "supported_schema_min",
            "supported_schema_max",
            "selected_wire_format",
            "server_time",
            "server_max_delivery_sequence",
            "blob_storage_enabled",
        ):
            value = getattr(m, name)
            if value is not None:
                setattr(out, name, value)
        if m.accepted_scope is not None:
            self.map(out.accepted_scope, m.accepted_scope)

    def operation_batch(self, out: pb.OperationBatch, m: OperationBatch) -> None:
        nodes: dict[str, int] = {}
        add_node = out.nodes.add

        def node_index(node_id: str) -> int:
            index = nodes[node_id] = len(nodes)
            raw = uuid_bytes(node_id)
            if raw is None:
                add_node(text=node_id)
            else:
                add_node(uuid=raw)
            return index

        strings = self._index
        intern = self.intern
        members = _Columns(self, out.members)
        add_members = members.add
        add = out.operations.add
        hash_match = HASH.fullmatch
        positions: dict[str, int] = {}  # op id -> index in this batch, for back-references
        # Record id -> its 16 bytes (None: sent as text); a batch often names a record again.
        record_ids: dict[str, bytes | None] = {}
        previous_wall = 0
        previous_seq = 0
        for position, op in enumerate(m.operations):
            op_id = op.id
            ts = op.timestamp
            wall = ts.wall_time
            seq = op.sequence_number
            if wall < 0 or seq < 0:
                raise LocalProtocolError(f"operation {op_id!r} has a negative wallTime or seq")
            collection = strings.get(op.collection)
            node = nodes.get(op.node_id)
            if node is None:
                node = node_index(op.node_id)
            # Fields left at zero are not sent (proto3), so they are not set either: each set
            # is a call into the protobuf runtime.
            p = add(
                type=OP_TYPE_CODES[op.type],
                collection=intern(op.collection) if collection is None else collection,
                logical=ts.logical,
                sequence_delta=seq - previous_seq,
            )
            if node:
                p.node = node
            if wall != previous_wall:
                p.wall_time_delta = wall - previous_wall
            previous_wall = wall
            previous_seq = seq
            details = None
            if hash_match(op_id):
                p.id = bytes.fromhex(op_id)
            else:
                details = p.details
                details.id_text = op_id
            record_id = op.record_id
            if record_id in record_ids:
                raw = record_ids[record_id]
            else:
                raw = record_ids[record_id] = uuid_bytes(record_id)
            if raw is None:
                p.record_text = record_id
            else:
                p.record_uuid = raw
            if op.data is not None:
                p.data_size = len(op.data) + 1
                add_members(op.data)
            if op.previous_data is not None:
                p.previous_size = len(op.previous_data) + 1
                add_members(op.previous_data)
            if op.causal_deps:
                refs = []
                for dep in op.causal_deps:
                    earlier = positions.get(dep)
                    if earlier is not None:
                        refs.append(position - earlier + 1)
                    elif hash_match(dep):
                        refs.append(0)
                        p.dep_hashes.append(bytes.fromhex(dep))
                    else:
                        refs.append(1)
                        details = details or p.details
                        details.dep_texts.append(dep)
                p.dep_refs.extend(refs)
            if ts.node_id != op.node_id:
                details = details or p.details
                ts_node = nodes.get(ts.node_id)
                details.timestamp_node = node_index(ts.node_id) if ts_node is None else ts_node
            if op.schema_version != 1:
                details = details or p.details
                details.schema_version = op.schema_version
            if op.atomic_ops is not None:
                details = details or p.details
                atomic = details.atomic_ops
                atomic.SetInParent()
                for field, atomic_op in op.atomic_ops.items():
                    atomic.fields.append(intern(field))
                    atomic.types.append(ATOMIC_TYPE_CODES[atomic_op.type])
                    self.value(atomic.values.add(), atomic_op.value)
            if op.transaction_id is not None:
                details = details or p.details
                details.transaction_id = op.transaction_id
            if op.mutation_name is not None:
                details = details or p.details
                details.mutation_name = op.mutation_name
            positions[op_id] = position
        members.write()
        out.is_final = m.is_final
        out.batch_index = m.batch_index
        for name in ("cursor", "total_batches", "base_delivery_sequence", "max_delivery_sequence"):
            value = getattr(m, name)
            if value is not None:
                setattr(out, name, value)

    def acknowledgment(self, out: pb.Acknowledgment, m: Acknowledgment) -> None:
        put_id(out, "acknowledged_uuid", "acknowledged_text", m.acknowledged_message_id)
        out.last_sequence_number = m.last_sequence_number
        if m.delivery_sequence is not None:
            out.delivery_sequence = m.delivery_sequence

    def error(self, out: pb.Error, m: ErrorMessage) -> None:
        out.code = m.code
        out.message = m.message
        out.retriable = m.retriable

    def operation_rejected(self, out: pb.OperationRejected, m: OperationRejected) -> None:
        if HASH.fullmatch(m.operation_id):
            out.operation_id = bytes.fromhex(m.operation_id)
        else:
            out.operation_id_text = m.operation_id
        out.collection = m.collection
        put_id(out, "record_uuid", "record_text", m.record_id)
        out.code = m.code
        out.message = m.message
        out.retriable = m.retriable

    def awareness_update(self, out: pb.AwarenessUpdate, m: AwarenessUpdate) -> None:
        if isinstance(m.client_id, float):
            out.client_double = m.client_id
        else:
            out.client_int = m.client_id
        self.map(out.states, m.states)

    def yjs_doc_update(self, out: pb.YjsDocUpdate, m: YjsDocUpdate) -> None:
        out.collection = m.collection
        put_id(out, "record_uuid", "record_text", m.record_id)
        out.field = m.field
        raw = canonical_b64(m.update)
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
