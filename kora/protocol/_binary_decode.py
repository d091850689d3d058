"""kora-pb1 decoding: a parsed ``Envelope`` back into a message, trusting nothing.

Every index is bounds-checked, raw ids must have their exact length, counters must be safe
integers, nesting is limited and operations are checked as ``operation_from_wire`` checks
them, so both wire formats accept the same operations.  Members that our encoder never
writes (``items``/``keys`` on a scalar ``Value``) are ignored, as protobuf ignores unknown
fields.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn

from kora.core.hlc import MAX_LOGICAL, MAX_WALL_TIME, HLCTimestamp
from kora.core.json_types import JsonValue
from kora.core.operation import AtomicOp, Operation, OpType
from kora.core.operations import operation_to_wire
from kora.protocol._binary_common import (
    ATOMIC_TYPES,
    INT64_MAX,
    INT64_MIN,
    KORA_BYTES,
    MAP_DOUBLE,
    MAP_FALSE,
    MAP_INT,
    MAP_NULL,
    MAP_STR,
    MAP_TRUE,
    MAP_VALUE,
    NUMERIC_ATOMIC_TYPES,
    OP_TYPES,
    OPERATION_DATA_DEPTH,
    TOP_DEPTH,
    uuid_text,
)
from kora.protocol._pb import sync_pb2 as pb
from kora.protocol.errors import (
    BinaryDecodeError,
    FrameTooLargeError,
    InvalidNumberError,
    InvalidOperationError,
    NestingTooDeepError,
    OperationTooLargeError,
    TooManyOperationsError,
    VersionVectorTooLargeError,
    WrongTypeError,
)
from kora.protocol.limits import MAX_SAFE_INTEGER, Limits
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

_BIG_INT: Final = re.compile(r"-?[1-9][0-9]{0,4299}")


def operation_json_size(op: Operation) -> int:
    """UTF-8 bytes of the operation's compact JSON: the JSON codec's measure (spec 8.4)."""
    text = json.dumps(operation_to_wire(op), ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass"))


def fail(message: str) -> NoReturn:
    raise BinaryDecodeError(message)


def get_id(uuid_raw: bytes, text: str, what: str) -> str:
    if text:
        if uuid_raw:
            fail(f"{what} has both a UUID and a text form")
        return text
    if not uuid_raw:
        return ""
    if len(uuid_raw) != 16:
        fail(f"{what} UUID has {len(uuid_raw)} bytes, expected 16")
    return uuid_text(uuid_raw)


def _get_hash(raw: bytes, text: str, what: str) -> str:
    if text:
        if raw:
            fail(f"{what} has both a raw and a text form")
        return text
    if not raw:
        return ""
    if len(raw) != 32:
        fail(f"{what} has {len(raw)} bytes, expected 32")
    return raw.hex()


def _safe(value: int, what: str) -> int:
    if value > MAX_SAFE_INTEGER:
        raise InvalidNumberError(f"{what} {value} is beyond 2**53 - 1")
    return value


def _safe_signed(value: int, what: str) -> int:
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise InvalidNumberError(f"{what} {value} is beyond +-(2**53 - 1)")
    return value


def _optional(message: Any, name: str, check: Callable[[int, str], int] = _safe) -> int | None:
    return check(getattr(message, name), name) if message.HasField(name) else None


def _optional_text(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


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
            if atomic.type in NUMERIC_ATOMIC_TYPES and (
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
            fail("blob chunk has both a raw and a text form")
        return str(m.chunk_text)
    if optional and not has_raw:
        return None
    return base64.b64encode(m.chunk).decode("ascii")


class Decoder:
    """Turns the body of one parsed Envelope back into a message."""

    __slots__ = ("expanded", "limits", "strings")

    def __init__(self, strings: Sequence[str], limits: Limits) -> None:
        self.strings = strings
        self.limits = limits
        # Characters that string-table and node-table references add when the message is
        # written out as JSON: a 2-byte reference can stand for a long string, so this is
        # what a small frame could amplify into (checked against the frame limit).
        self.expanded = 0

    def check_expansion(self, frame_size: int) -> None:
        """Refuse a frame whose table references expand beyond the frame size limit."""
        if frame_size + self.expanded > self.limits.max_frame_bytes:
            raise FrameTooLargeError(
                f"frame expands to more than {self.limits.max_frame_bytes} bytes of text"
            )

    def string(self, index: int) -> str:
        try:
            return self.strings[index]
        except IndexError:
            fail(f"string index {index} is outside the string table")

    # ------------------------------------------------------------ values

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
                    fail("an array Value has keys")
                value = self.value
                return [value(item, depth + 1) for item in items]
            if v.container != pb.CONTAINER_OBJECT:
                fail(f"unknown container kind {v.container}")
            return self.members(keys, items, depth)
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
            if number - number != 0:
                raise InvalidNumberError("NaN or infinity in a value")
            return number
        if kind == "kora_bytes":
            return {KORA_BYTES: base64.b64encode(v.kora_bytes).decode("ascii")}
        if kind == "big_int_value":
            text = v.big_int_value
            if not _BIG_INT.fullmatch(text):
                raise InvalidNumberError("big integer value is not a decimal integer")
            number = int(text)
            if INT64_MIN <= number <= INT64_MAX:
                fail("big integer value fits in int64")
            return number
        fail("a Value has no kind")

    def members(
        self, keys: Sequence[int], values: Sequence[pb.Value], depth: int
    ) -> dict[str, JsonValue]:
        """An object from parallel keys (string-table indexes) and values (Value.items)."""
        if len(keys) != len(values):
            fail("an object has different numbers of keys and values")
        strings = self.strings
        value = self.value
        try:
            result = {
                strings[key]: value(member, depth + 1)
                for key, member in zip(keys, values, strict=True)
            }
        except IndexError:
            fail("object key index is outside the string table")
        if len(result) != len(keys):
            fail("an object repeats a key")
        return result

    def map(self, m: pb.Map, depth: int) -> dict[str, JsonValue]:
        """An object from its columns (see ``Map`` in sync.proto)."""
        pairs = self.pairs(m, depth)
        result = dict(pairs)
        if len(result) != len(pairs):
            fail("an object repeats a key")
        return result

    def pairs(self, m: pb.Map, depth: int) -> list[tuple[str, JsonValue]]:
        """The (name, value) members held in the columns of ``m``, in order."""
        if depth > self.limits.max_nesting_depth:
            raise NestingTooDeepError(f"values nest deeper than {self.limits.max_nesting_depth}")
        kinds = m.kinds
        keys = m.keys
        if len(keys) != len(kinds):
            fail("an object has different numbers of keys and kinds")
        ints = m.ints
        strs = m.strs
        doubles = m.doubles
        values = m.values
        if (
            kinds.count(MAP_INT) != len(ints)
            or kinds.count(MAP_STR) != len(strs)
            or kinds.count(MAP_DOUBLE) != len(doubles)
            or kinds.count(MAP_VALUE) != len(values)
        ):
            fail("an object's kinds do not match its columns")
        try:
            names = [self.strings[key] for key in keys]
        except IndexError:
            fail("object key index is outside the string table")
        self.expanded += sum(map(len, names))
        # Iterators over the columns: each kind takes the next item of its own column.
        next_int = iter(ints).__next__
        next_str = iter(strs).__next__
        next_double = iter(doubles).__next__
        next_value = iter(values).__next__
        value = self.value
        result: list[tuple[str, JsonValue]] = []
        append = result.append
        for name, kind in zip(names, kinds, strict=True):
            if kind == MAP_STR:
                append((name, next_str()))
            elif kind == MAP_INT:
                append((name, next_int()))
            elif kind == MAP_FALSE:
                append((name, False))
            elif kind == MAP_TRUE:
                append((name, True))
            elif kind == MAP_NULL:
                append((name, None))
            elif kind == MAP_DOUBLE:
                number = next_double()
                if number - number != 0:
                    raise InvalidNumberError("NaN or infinity in a value")
                append((name, number))
            elif kind == MAP_VALUE:
                append((name, value(next_value(), depth + 1)))
            else:
                fail(f"unknown object member kind {kind}")
        return result

    def scope(self, m: pb.Map) -> dict[str, Any]:
        scope = self.map(m, TOP_DEPTH)
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
            node = get_id(entry.node_uuid, entry.node_text, "version vector node")
            if node in vector:
                fail(f"version vector repeats node {node!r}")
            vector[node] = _safe(entry.sequence, "version vector sequence")
        return vector

    # ------------------------------------------------------------ messages

    def handshake(self, message_id: str, h: pb.Handshake) -> Handshake:
        queries: tuple[dict[str, Any], ...] | None = None
        if h.HasField("sync_queries"):
            raw = self.value(h.sync_queries, TOP_DEPTH)
            if not isinstance(raw, list) or not all(isinstance(q, dict) for q in raw):
                raise WrongTypeError("syncQueries is not an array of objects")
            queries = tuple(raw)  # type: ignore[arg-type]
        formats = h.supported_wire_formats
        return Handshake(
            message_id=message_id,
            node_id=get_id(h.node_uuid, h.node_text, "nodeId"),
            version_vector=self.version_vector(h.version_vector),
            schema_version=_safe_signed(h.schema_version, "schemaVersion"),
            auth_token=_optional_text(h, "auth_token"),
            supported_wire_formats=(
                tuple(formats.values) if h.HasField("supported_wire_formats") else None
            ),
            sync_scope=self.scope(h.sync_scope) if h.HasField("sync_scope") else None,
            sync_queries=queries,
            delta_cursor=_optional_text(h, "delta_cursor"),
            last_delivery_sequence=_optional(h, "last_delivery_sequence"),
        )

    def handshake_response(self, message_id: str, r: pb.HandshakeResponse) -> HandshakeResponse:
        return HandshakeResponse(
            message_id=message_id,
            node_id=get_id(r.node_uuid, r.node_text, "nodeId"),
            version_vector=self.version_vector(r.version_vector),
            schema_version=_safe_signed(r.schema_version, "schemaVersion"),
            accepted=r.accepted,
            reject_reason=_optional_text(r, "reject_reason"),
            supported_schema_min=_optional(r, "supported_schema_min", _safe_signed),
            supported_schema_max=_optional(r, "supported_schema_max", _safe_signed),
            selected_wire_format=_optional_text(r, "selected_wire_format"),
            server_time=_optional(r, "server_time"),
            server_max_delivery_sequence=_optional(r, "server_max_delivery_sequence"),
            blob_storage_enabled=_optional_text(r, "blob_storage_enabled"),
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
        nodes = [get_id(n.uuid, n.text, "node id") for n in b.nodes]
        strings = self.strings
        members = self.pairs(b.members, OPERATION_DATA_DEPTH) if b.HasField("members") else []
        member_count = len(members)
        used = 0  # members taken by the operations so far
        operations: list[Operation] = []
        ids: list[str] = []
        # Record UUIDs already written out in this batch (updates often share a record).
        record_texts: dict[bytes, str] = {}
        insert, update, delete = OpType.INSERT, OpType.UPDATE, OpType.DELETE
        wall = 0
        seq = 0
        for position, p in enumerate(wire_ops):
            raw_id = p.id
            if len(raw_id) == 32:
                op_id = raw_id.hex()
            elif raw_id:
                fail(f"operation {position}: id has {len(raw_id)} bytes, expected 32")
            else:
                op_id = ""
            try:
                node_id = nodes[p.node]
                collection = strings[p.collection]
                op_type = OP_TYPES[p.type]
            except IndexError:
                fail(f"operation {position} refers to a missing node, collection or type")
            record_raw = p.record_uuid
            if record_raw:
                known = record_texts.get(record_raw)
                if known is None or p.record_text:
                    known = record_texts[record_raw] = get_id(record_raw, p.record_text, "recordId")
                record_id = known
            else:
                record_id = p.record_text
            wall += p.wall_time_delta
            seq += p.sequence_delta
            logical = p.logical
            if not (0 <= wall <= MAX_SAFE_INTEGER and 0 <= seq <= MAX_SAFE_INTEGER):
                raise InvalidNumberError(
                    f"operation {position}: wallTime {wall} or sequenceNumber {seq} "
                    "is not a safe non-negative integer"
                )
            ts_node = node_id
            schema_version = 1
            atomic_ops: dict[str, AtomicOp] | None = None
            transaction_id = mutation_name = None
            dep_texts: Sequence[str] = ()
            if p.HasField("details"):
                d = p.details
                if d.id_text:
                    if raw_id:
                        fail(f"operation {position}: id has both a raw and a text form")
                    op_id = d.id_text
                if d.HasField("timestamp_node"):
                    try:
                        ts_node = nodes[d.timestamp_node]
                    except IndexError:
                        fail(f"operation {position} refers to a missing timestamp node")
                if d.HasField("schema_version"):
                    schema_version = _safe(d.schema_version, "schemaVersion")
                if d.HasField("atomic_ops"):
                    atomic_ops = self.atomic_ops(d.atomic_ops)
                transaction_id = _optional_text(d, "transaction_id")
                mutation_name = _optional_text(d, "mutation_name")
                dep_texts = d.dep_texts
            data = previous_data = None
            size = p.data_size
            if size:
                end = used + size - 1
                if end > member_count:
                    fail(f"operation {position}: data runs past the batch's members")
                data = dict(members[used:end])
                if len(data) != end - used:
                    fail(f"operation {position}: data repeats a key")
                used = end
            size = p.previous_size
            if size:
                end = used + size - 1
                if end > member_count:
                    fail(f"operation {position}: previousData runs past the batch's members")
                previous_data = dict(members[used:end])
                if len(previous_data) != end - used:
                    fail(f"operation {position}: previousData repeats a key")
                used = end
            refs = p.dep_refs
            deps: tuple[str, ...] = ()
            if refs:
                if len(refs) == 1 and refs[0] >= 2 and refs[0] - 1 <= position and not dep_texts:
                    deps = (ids[position - refs[0] + 1],)  # the usual: one earlier op
                    if p.dep_hashes:
                        fail(f"operation {position}: unused dependency ids")
                else:
                    deps = self.dependencies(position, refs, p.dep_hashes, dep_texts, ids)
            elif dep_texts or p.dep_hashes:
                fail(f"operation {position} has dependency ids but no dependency refs")
            # Positional (attrs takes keywords about 40% slower); kora.core.operations
            # asserts the field order.
            op = Operation(
                op_id,
                node_id,
                op_type,
                collection,
                record_id,
                data,
                previous_data,
                HLCTimestamp(wall, logical, ts_node),
                seq,
                deps,
                schema_version,
                atomic_ops,
                transaction_id,
                mutation_name,
            )
            # The common operation passes _check_operation: tested here on the locals.
            if not (
                op_id
                and node_id
                and collection
                and record_id
                and wall < MAX_WALL_TIME
                and logical <= MAX_LOGICAL
                and schema_version >= 1
                and atomic_ops is None
                and (
                    (op_type is insert and data is not None)
                    or (op_type is update and data is not None and previous_data is not None)
                    or (op_type is delete and data is None)
                )
            ):
                _check_operation(op, position)
            operations.append(op)
            ids.append(op_id)
        if used != member_count:
            fail("the batch has members that no operation takes")
        self.expanded += sum(len(op.collection) + 2 * len(op.node_id) for op in operations)
        self.check_expansion(frame_size)
        # Ids double and other text can at most stay as long in JSON; with the expansion
        # above, this bounds every operation's JSON.  Measure each one only if it matters.
        if 3 * frame_size + self.expanded > limits.max_operation_bytes:
            for position, op in enumerate(operations):
                size = operation_json_size(op)
                if size > limits.max_operation_bytes:
                    raise OperationTooLargeError(
                        f"operation {position} has {size} bytes of JSON "
                        f"(limit {limits.max_operation_bytes})"
                    )
        return OperationBatch(
            message_id=message_id,
            operations=tuple(operations),
            is_final=b.is_final,
            batch_index=_safe(b.batch_index, "batchIndex"),
            cursor=_optional_text(b, "cursor"),
            total_batches=_optional(b, "total_batches"),
            base_delivery_sequence=_optional(b, "base_delivery_sequence"),
            max_delivery_sequence=_optional(b, "max_delivery_sequence"),
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
                        fail(f"operation {position}: dependency id has {len(raw)} bytes")
                    deps.append(raw.hex())
                elif ref == 1:
                    deps.append(texts[next_text])
                    next_text += 1
                else:
                    earlier = position - ref + 1
                    if earlier < 0:
                        fail(f"operation {position}: dependency refers before the batch")
                    deps.append(ids[earlier])
        except IndexError:
            fail(f"operation {position}: more dependency refs than dependency ids")
        if next_hash != len(hashes) or next_text != len(texts):
            fail(f"operation {position}: unused dependency ids")
        return tuple(deps)

    def atomic_ops(self, a: pb.AtomicOps) -> dict[str, AtomicOp]:
        fields, types, values = a.fields, a.types, a.values
        if not len(fields) == len(types) == len(values):
            fail("atomicOps has different numbers of fields, types and values")
        result: dict[str, AtomicOp] = {}
        for field_index, type_code, member in zip(fields, types, values, strict=True):
            name = self.string(field_index)
            self.expanded += len(name)
            if name in result:
                fail(f"atomicOps repeats field {name!r}")
            if not 0 <= type_code < len(ATOMIC_TYPES):
                fail(f"unknown atomic op type {type_code}")
            value = self.value(member, OPERATION_DATA_DEPTH + 1)
            result[name] = AtomicOp(ATOMIC_TYPES[type_code], value)
        return result

    def acknowledgment(self, message_id: str, a: pb.Acknowledgment) -> Acknowledgment:
        return Acknowledgment(
            message_id=message_id,
            acknowledged_message_id=get_id(
                a.acknowledged_uuid, a.acknowledged_text, "acknowledgedMessageId"
            ),
            last_sequence_number=_safe(a.last_sequence_number, "lastSequenceNumber"),
            delivery_sequence=_optional(a, "delivery_sequence"),
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
            record_id=get_id(r.record_uuid, r.record_text, "recordId"),
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
            if client_id - client_id != 0:
                raise InvalidNumberError("clientId is not finite")
        else:
            fail("awareness-update has no clientId")
        return AwarenessUpdate(
            message_id=message_id, client_id=client_id, states=self.map(a.states, TOP_DEPTH)
        )

    def yjs_doc_update(self, message_id: str, y: pb.YjsDocUpdate) -> YjsDocUpdate:
        if y.HasField("update_text"):
            if y.update:
                fail("yjs-doc-update has both a raw and a text update")
            update = y.update_text
        else:
            update = base64.b64encode(y.update).decode("ascii")
        return YjsDocUpdate(
            message_id=message_id,
            collection=y.collection,
            record_id=get_id(y.record_uuid, y.record_text, "recordId"),
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
