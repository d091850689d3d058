"""What the kora-pb1 encoder and decoder share: tables, id shapes, base64 rules."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

from kora.core.operation import AtomicOpType, OpType
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

#: A content id: 64 lowercase hex chars, sent as 32 raw bytes.
HASH: Final = re.compile(r"[0-9a-f]{64}")
#: A canonical lowercase UUID, sent as 16 raw bytes.
UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
KORA_BYTES: Final = "$koraBytes"

OP_TYPES: Final = (OpType.INSERT, OpType.UPDATE, OpType.DELETE)
OP_TYPE_CODES: Final = {t: i for i, t in enumerate(OP_TYPES)}
ATOMIC_TYPES: Final = (
    AtomicOpType.INCREMENT,
    AtomicOpType.MAX,
    AtomicOpType.MIN,
    AtomicOpType.APPEND,
    AtomicOpType.REMOVE,
)
ATOMIC_TYPE_CODES: Final = {t: i for i, t in enumerate(ATOMIC_TYPES)}
NUMERIC_ATOMIC_TYPES: Final = frozenset(
    {AtomicOpType.INCREMENT, AtomicOpType.MAX, AtomicOpType.MIN}
)

# Where a member of a Map is (Map.kinds), see sync.proto.
MAP_NULL: Final = 0
MAP_FALSE: Final = 1
MAP_TRUE: Final = 2
MAP_INT: Final = 3
MAP_STR: Final = 4
MAP_DOUBLE: Final = 5
MAP_VALUE: Final = 6

# Depth of the containers right inside a message object, counted as the JSON codec counts
# them (the message object itself is depth 1), so one limit means the same in both formats.
TOP_DEPTH: Final = 2
OPERATION_DATA_DEPTH: Final = 4  # message > operations array > operation > data

#: Wire ``type`` -> the Envelope field that carries it.
FIELD_OF_TYPE: Final = {
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
TYPE_OF_FIELD: Final = {field: type_ for type_, field in FIELD_OF_TYPE.items()}


def uuid_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid_bytes(text: str) -> bytes | None:
    """The 16 bytes of a canonical lowercase UUID, or None for any other text."""
    return bytes.fromhex(text.replace("-", "")) if UUID.fullmatch(text) else None


def canonical_b64(text: str) -> bytes | None:
    """The bytes of ``text`` if it is standard base64 that re-encodes to exactly ``text``."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None
