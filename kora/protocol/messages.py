"""The eleven messages of the Kora sync protocol v1 (spec 1.3) as frozen value types.

Attribute names are the snake_case of the wire names (``messageId`` -> ``message_id``).
Optional fields default to ``None`` and are left out of encoded frames, as the reference
omits ``undefined``.  ``extra`` keeps top-level fields that a peer sent and this version does
not know: they are tolerated, re-encoded after the known fields, and ignored by ``==``.

Mappings inside messages (version vectors, scopes, extras) are plain dicts that must be
treated as immutable, like the data of an ``Operation``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, TypeAlias

import attrs

from kora.core.json_types import JsonValue
from kora.core.operation import Operation

__all__ = [
    "MESSAGE_TYPES",
    "SIDE_CHANNEL_TYPES",
    "Acknowledgment",
    "AwarenessUpdate",
    "BlobChunkPush",
    "BlobChunkRequest",
    "BlobChunkResponse",
    "ErrorMessage",
    "Handshake",
    "HandshakeResponse",
    "Message",
    "OperationBatch",
    "OperationRejected",
    "ScopeMap",
    "WireVersionVector",
    "YjsDocUpdate",
]

#: ``{nodeId: highest sequence number}`` as it travels (spec 2.2); key order is kept.
WireVersionVector: TypeAlias = Mapping[str, int]
#: ``{collection: {field: value}}`` (spec 8.6).
ScopeMap: TypeAlias = Mapping[str, Mapping[str, JsonValue]]


def _extra() -> Any:
    return attrs.field(factory=dict, eq=False, repr=False, kw_only=True)


@attrs.frozen(kw_only=True)
class Handshake:
    """Client -> server, the first message of a connection."""

    TYPE: ClassVar[str] = "handshake"

    message_id: str
    node_id: str
    version_vector: WireVersionVector
    schema_version: int
    auth_token: str | None = None
    supported_wire_formats: tuple[str, ...] | None = None
    sync_scope: ScopeMap | None = None
    sync_queries: tuple[Mapping[str, JsonValue], ...] | None = None
    delta_cursor: str | None = None
    last_delivery_sequence: int | None = None
    extra: Mapping[str, JsonValue] = _extra()


@attrs.frozen(kw_only=True)
class HandshakeResponse:
    """Server -> client: accept or reject the handshake."""

    TYPE: ClassVar[str] = "handshake-response"

    message_id: str
    node_id: str
    version_vector: WireVersionVector
    schema_version: int
    accepted: bool
    reject_reason: str | None = None
    supported_schema_min: int | None = None
    supported_schema_max: int | None = None
    selected_wire_format: str | None = None
    server_time: int | None = None
    server_max_delivery_sequence: int | None = None
    blob_storage_enabled: bool | None = None
    accepted_scope: ScopeMap | None = None
    extra: Mapping[str, JsonValue] = _extra()


@attrs.frozen(kw_only=True)
class OperationBatch:
    """Operations in either direction.

    A batch with ``max_delivery_sequence`` is a *delivery batch* of the server's delivery
    stream (spec 4.4); one without it is a *legacy* batch.
    """

    TYPE: ClassVar[str] = "operation-batch"

    message_id: str
    operations: tuple[Operation, ...]
    is_final: bool
    batch_index: int
    cursor: str | None = None
    total_batches: int | None = None
    base_delivery_sequence: int | None = None
    max_delivery_sequence: int | None = None
    extra: Mapping[str, JsonValue] = _extra()

    @property
    def is_delivery_batch(self) -> bool:
        return self.max_delivery_sequence is not None

    @property
    def last_sequence_number(self) -> int:
        """What an acknowledgment of this batch reports (spec 4.7): last op's seq, else 0."""
        return self.operations[-1].sequence_number if self.operations else 0


@attrs.frozen(kw_only=True)
class Acknowledgment:
    """Acknowledges one ``operation-batch`` (either direction)."""

    TYPE: ClassVar[str] = "acknowledgment"

    message_id: str
    acknowledged_message_id: str
    last_sequence_number: int
    delivery_sequence: int | None = None
    extra: Mapping[str, JsonValue] = _extra()


@attrs.frozen(kw_only=True)
class ErrorMessage:
    """The wire ``error`` message (named so to stay apart from Python exceptions)."""

    TYPE: ClassVar[str] = "error"

    message_id: str
    code: str
    message: str
    retriable: bool
    extra: Mapping[str, JsonValue] = _extra()


@attrs.frozen(kw_only=True)
class OperationRejected:
    """Server -> client: one operation was refused for good (or retriably)."""

    TYPE: ClassVar[str] = "operation-rejected"

    message_id: str
    operation_id: str
    collection: str
    record_id: str
    code: str
    message: str
    retriable: bool
    extra: Mapping[str, JsonValue] = _extra()


@attrs.frozen(kw_only=True)
class AwarenessUpdate:
    """Ephemeral presence: ``states`` maps a client id (as text) to a state or ``None``."""

    TYPE: ClassVar[str] = "awareness-update"

    message_id: str
    client_id: int | float
    states: Mapping[str, JsonValue]
    extra: Mapping[str, JsonValue] = _extra()


@attrs.frozen(kw_only=True)
class YjsDocUpdate:
    """A Yjs update of one richtext field; ``update`` is standard base64 text."""

    TYPE: ClassVar[str] = "yjs-doc-update"

    message_id: str
    collection: str
    record_id: str
    field: str
    update: str
    extra: Mapping[str, JsonValue] = _extra()


@attrs.frozen(kw_only=True)
class BlobChunkRequest:
    """Asks for the chunk with the given hex SHA-256 ``hash``."""

    TYPE: ClassVar[str] = "blob-chunk-request"

    message_id: str
    request_id: str
    hash: str
    extra: Mapping[str, JsonValue] = _extra()


@attrs.frozen(kw_only=True)
class BlobChunkResponse:
    """Answers a request: ``bytes`` is standard base64 text, or ``None`` for "not held"."""

    TYPE: ClassVar[str] = "blob-chunk-response"

    message_id: str
    request_id: str
    bytes: str | None
    extra: Mapping[str, JsonValue] = _extra()


@attrs.frozen(kw_only=True)
class BlobChunkPush:
    """Client -> server upload of one chunk (standard base64 text)."""

    TYPE: ClassVar[str] = "blob-chunk-push"

    message_id: str
    hash: str
    bytes: str
    extra: Mapping[str, JsonValue] = _extra()


Message: TypeAlias = (
    Handshake
    | HandshakeResponse
    | OperationBatch
    | Acknowledgment
    | ErrorMessage
    | OperationRejected
    | AwarenessUpdate
    | YjsDocUpdate
    | BlobChunkRequest
    | BlobChunkResponse
    | BlobChunkPush
)

#: Wire ``type`` -> message class, in the order of spec 1.3.
MESSAGE_TYPES: Mapping[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Handshake,
        HandshakeResponse,
        OperationBatch,
        Acknowledgment,
        ErrorMessage,
        OperationRejected,
        AwarenessUpdate,
        YjsDocUpdate,
        BlobChunkRequest,
        BlobChunkResponse,
        BlobChunkPush,
    )
}

#: Types that a peer must accept at decode time but may ignore (spec 1.4).
SIDE_CHANNEL_TYPES: frozenset[str] = frozenset(
    {
        AwarenessUpdate.TYPE,
        YjsDocUpdate.TYPE,
        BlobChunkRequest.TYPE,
        BlobChunkResponse.TYPE,
        BlobChunkPush.TYPE,
    }
)
