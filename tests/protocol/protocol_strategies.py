"""Hypothesis strategies for every message type, with realistic operations.

``json_safe=True`` keeps integers within what a JavaScript peer represents exactly, because
the JSON format (like ``JSON.stringify``) writes larger ones as doubles; the binary format
carries any integer.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from kora.core.hlc import MAX_LOGICAL, MAX_WALL_TIME, HLCTimestamp
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType
from kora.protocol import (
    MAX_SAFE_INTEGER,
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

# Text without unpaired surrogates (neither format can carry them; JSON decoders refuse them).
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
short_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6)
hex_id = st.binary(min_size=32, max_size=32).map(bytes.hex)
uuid_text = st.uuids().map(str)
# Ids are usually UUIDs / content hashes, sometimes arbitrary text (exercises the fallbacks).
node_id = st.one_of(uuid_text, uuid_text.map(str.upper), short_text)
op_id = st.one_of(hex_id, hex_id, short_text)
message_id = st.one_of(
    uuid_text, st.builds(lambda n: f"msg-1795768501198-{n}", st.integers(0, 999))
)
counter = st.one_of(st.integers(0, 1000), st.integers(0, MAX_SAFE_INTEGER))
safe_int = st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
b64 = st.binary(max_size=24).map(lambda raw: base64.b64encode(raw).decode("ascii"))
# Base64 that is not canonical (padding removed), to exercise the text fallbacks.
odd_b64 = st.one_of(b64, b64.map(lambda s: s.rstrip("=")), text)


@functools.cache
def floats(*, json_safe: bool) -> st.SearchStrategy[float]:
    if json_safe:
        # Beyond 2**53 a JS peer prints a double as the integer it is closest to, which a
        # Python decoder reads back as a (different) int: equal for JS, not for Python.
        return st.floats(min_value=-(2.0**53 - 1), max_value=2.0**53 - 1)
    return st.floats(allow_nan=False, allow_infinity=False)


@functools.cache
def json_values(*, json_safe: bool) -> st.SearchStrategy[Any]:
    integers = safe_int if json_safe else st.one_of(safe_int, st.integers())
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        integers,
        floats(json_safe=json_safe),
        text,
        b64.map(lambda s: {"$koraBytes": s}),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.dictionaries(text, children, max_size=3)
        ),
        max_leaves=4,
    )


@functools.cache
def json_objects(*, json_safe: bool, max_size: int = 3) -> st.SearchStrategy[dict[str, Any]]:
    # "__kora_bytes__" top-level values are rewritten by the JSON decoder (spec 2.2).
    keys = text.filter(lambda k: k != "__kora_bytes__")
    return st.dictionaries(keys, json_values(json_safe=json_safe), max_size=max_size)


OP_TYPES = st.sampled_from(OpType)
ATOMIC_TYPES = st.sampled_from(AtomicOpType)
COLLECTIONS = st.sampled_from(["todos", "notes", "é-collection"]) | short_text


@st.composite
def operations(draw: st.DrawFn, *, json_safe: bool, earlier: tuple[str, ...] = ()) -> Operation:
    op_type = draw(OP_TYPES)
    data = previous = None
    atomic: dict[str, AtomicOp] | None = None
    if op_type is not OpType.DELETE:
        data = draw(json_objects(json_safe=json_safe))
    if op_type is OpType.UPDATE:
        previous = draw(json_objects(json_safe=json_safe))
        if draw(st.booleans()):
            atomic = {}
            for field in draw(st.lists(short_text, max_size=3, unique=True)):
                kind = draw(ATOMIC_TYPES)
                if kind in (AtomicOpType.INCREMENT, AtomicOpType.MAX, AtomicOpType.MIN):
                    value = draw(st.one_of(safe_int, floats(json_safe=json_safe)))
                else:
                    value = draw(json_values(json_safe=json_safe))
                atomic[field] = AtomicOp(kind, value)
    node = draw(node_id)
    return Operation(
        id=draw(op_id),
        node_id=node,
        type=op_type,
        collection=draw(COLLECTIONS),
        record_id=draw(st.one_of(uuid_text, short_text)),
        data=data,
        previous_data=previous,
        timestamp=HLCTimestamp(
            draw(st.integers(0, MAX_WALL_TIME - 1)),
            draw(st.integers(0, MAX_LOGICAL)),
            draw(st.just(node) | node_id),
        ),
        sequence_number=draw(counter),
        causal_deps=tuple(
            earlier[draw(st.integers(0, len(earlier) - 1))]
            if earlier and draw(st.booleans())
            else draw(op_id)
            for _ in range(draw(st.integers(0, 3)))
        ),
        schema_version=draw(st.one_of(st.just(1), st.integers(1, MAX_SAFE_INTEGER))),
        atomic_ops=atomic,
        transaction_id=draw(st.none() | text),
        mutation_name=draw(st.none() | text),
    )


@st.composite
def operation_lists(draw: st.DrawFn, *, json_safe: bool) -> tuple[Operation, ...]:
    ops: list[Operation] = []
    for _ in range(draw(st.integers(0, 4))):
        ops.append(draw(operations(json_safe=json_safe, earlier=tuple(op.id for op in ops))))
    return tuple(ops)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def _extra(known: set[str]) -> st.SearchStrategy[dict[str, Any]]:
    keys = text.filter(lambda k: k not in known and k not in ("type", "messageId"))
    return st.dictionaries(keys, json_values(json_safe=True), max_size=2)


def _with_extra(cls: type[Message], known: set[str], **fields: Any) -> st.SearchStrategy[Any]:
    return st.builds(cls, message_id=message_id, extra=_extra(known) | st.just({}), **fields)


@functools.cache
def scopes(*, json_safe: bool) -> st.SearchStrategy[dict[str, dict[str, Any]]]:
    return st.dictionaries(short_text, json_objects(json_safe=json_safe, max_size=2), max_size=2)


@functools.cache
def version_vectors() -> st.SearchStrategy[dict[str, int]]:
    return st.dictionaries(node_id, counter, max_size=4)


def message_strategies(*, json_safe: bool) -> dict[str, st.SearchStrategy[Any]]:
    """One strategy per message type (keyed by the wire ``type``)."""
    known: Callable[..., set[str]] = lambda *names: set(names)  # noqa: E731
    return {
        Handshake.TYPE: _with_extra(
            Handshake,
            known(
                "nodeId",
                "versionVector",
                "schemaVersion",
                "authToken",
                "supportedWireFormats",
                "syncScope",
                "syncQueries",
                "deltaCursor",
                "lastDeliverySequence",
            ),
            node_id=node_id,
            version_vector=version_vectors(),
            schema_version=safe_int,
            auth_token=optional(text),
            supported_wire_formats=optional(st.lists(text, max_size=3).map(tuple)),
            sync_scope=optional(scopes(json_safe=json_safe)),
            sync_queries=optional(
                st.lists(json_objects(json_safe=json_safe, max_size=2), max_size=2).map(tuple)
            ),
            delta_cursor=optional(text),
            last_delivery_sequence=optional(counter),
        ),
        HandshakeResponse.TYPE: _with_extra(
            HandshakeResponse,
            known(
                "nodeId",
                "versionVector",
                "schemaVersion",
                "accepted",
                "rejectReason",
                "supportedSchemaMin",
                "supportedSchemaMax",
                "selectedWireFormat",
                "serverTime",
                "serverMaxDeliverySequence",
                "blobStorageEnabled",
                "acceptedScope",
            ),
            node_id=node_id,
            version_vector=version_vectors(),
            schema_version=safe_int,
            accepted=st.booleans(),
            reject_reason=optional(text),
            supported_schema_min=optional(safe_int),
            supported_schema_max=optional(safe_int),
            selected_wire_format=optional(st.sampled_from(["json", "kora-pb1", "protobuf"])),
            server_time=optional(counter),
            server_max_delivery_sequence=optional(counter),
            blob_storage_enabled=optional(st.booleans()),
            accepted_scope=optional(scopes(json_safe=json_safe)),
        ),
        OperationBatch.TYPE: _with_extra(
            OperationBatch,
            known(
                "operations",
                "isFinal",
                "batchIndex",
                "cursor",
                "totalBatches",
                "baseDeliverySequence",
                "maxDeliverySequence",
            ),
            operations=operation_lists(json_safe=json_safe),
            is_final=st.booleans(),
            batch_index=counter,
            cursor=optional(text),
            total_batches=optional(counter),
            base_delivery_sequence=optional(counter),
            max_delivery_sequence=optional(counter),
        ),
        Acknowledgment.TYPE: _with_extra(
            Acknowledgment,
            known("acknowledgedMessageId", "lastSequenceNumber", "deliverySequence"),
            acknowledged_message_id=message_id | text,
            last_sequence_number=counter,
            delivery_sequence=optional(counter),
        ),
        ErrorMessage.TYPE: _with_extra(
            ErrorMessage,
            known("code", "message", "retriable"),
            code=st.sampled_from(["AUTH_FAILED", "SYNC_ERROR", "RATE_LIMIT"]) | text,
            message=text,
            retriable=st.booleans(),
        ),
        OperationRejected.TYPE: _with_extra(
            OperationRejected,
            known("operationId", "collection", "recordId", "code", "message", "retriable"),
            operation_id=op_id | st.just(""),
            collection=text,
            record_id=st.one_of(uuid_text, text),
            code=text,
            message=text,
            retriable=st.booleans(),
        ),
        AwarenessUpdate.TYPE: _with_extra(
            AwarenessUpdate,
            known("clientId", "states"),
            client_id=st.one_of(st.integers(0, 2**31 - 1), floats(json_safe=json_safe)),
            states=st.dictionaries(
                st.integers(0, 2**31 - 1).map(str),
                st.none() | json_objects(json_safe=json_safe, max_size=3),
                max_size=3,
            ),
        ),
        YjsDocUpdate.TYPE: _with_extra(
            YjsDocUpdate,
            known("collection", "recordId", "field", "update"),
            collection=text,
            record_id=st.one_of(uuid_text, text),
            field=text,
            update=odd_b64,
        ),
        BlobChunkRequest.TYPE: _with_extra(
            BlobChunkRequest,
            known("requestId", "hash"),
            request_id=text,
            hash=hex_id | text,
        ),
        BlobChunkResponse.TYPE: _with_extra(
            BlobChunkResponse,
            known("requestId", "bytes"),
            request_id=text,
            bytes=optional(odd_b64),
        ),
        BlobChunkPush.TYPE: _with_extra(
            BlobChunkPush,
            known("hash", "bytes"),
            hash=hex_id | text,
            bytes=odd_b64,
        ),
    }
