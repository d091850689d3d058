from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NullValue(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NULL_VALUE: _ClassVar[NullValue]

class Container(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTAINER_ARRAY: _ClassVar[Container]
    CONTAINER_OBJECT: _ClassVar[Container]

class OpType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OP_TYPE_INSERT: _ClassVar[OpType]
    OP_TYPE_UPDATE: _ClassVar[OpType]
    OP_TYPE_DELETE: _ClassVar[OpType]

class AtomicOpType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATOMIC_OP_TYPE_INCREMENT: _ClassVar[AtomicOpType]
    ATOMIC_OP_TYPE_MAX: _ClassVar[AtomicOpType]
    ATOMIC_OP_TYPE_MIN: _ClassVar[AtomicOpType]
    ATOMIC_OP_TYPE_APPEND: _ClassVar[AtomicOpType]
    ATOMIC_OP_TYPE_REMOVE: _ClassVar[AtomicOpType]
NULL_VALUE: NullValue
CONTAINER_ARRAY: Container
CONTAINER_OBJECT: Container
OP_TYPE_INSERT: OpType
OP_TYPE_UPDATE: OpType
OP_TYPE_DELETE: OpType
ATOMIC_OP_TYPE_INCREMENT: AtomicOpType
ATOMIC_OP_TYPE_MAX: AtomicOpType
ATOMIC_OP_TYPE_MIN: AtomicOpType
ATOMIC_OP_TYPE_APPEND: AtomicOpType
ATOMIC_OP_TYPE_REMOVE: AtomicOpType

class Envelope(_message.Message):
    __slots__ = ("message_id", "message_uuid", "handshake", "handshake_response", "operation_batch", "acknowledgment", "error", "operation_rejected", "awareness_update", "yjs_doc_update", "blob_chunk_request", "blob_chunk_response", "blob_chunk_push", "strings", "extra")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_UUID_FIELD_NUMBER: _ClassVar[int]
    HANDSHAKE_FIELD_NUMBER: _ClassVar[int]
    HANDSHAKE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    OPERATION_BATCH_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGMENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OPERATION_REJECTED_FIELD_NUMBER: _ClassVar[int]
    AWARENESS_UPDATE_FIELD_NUMBER: _ClassVar[int]
    YJS_DOC_UPDATE_FIELD_NUMBER: _ClassVar[int]
    BLOB_CHUNK_REQUEST_FIELD_NUMBER: _ClassVar[int]
    BLOB_CHUNK_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    BLOB_CHUNK_PUSH_FIELD_NUMBER: _ClassVar[int]
    STRINGS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    message_uuid: bytes
    handshake: Handshake
    handshake_response: HandshakeResponse
    operation_batch: OperationBatch
    acknowledgment: Acknowledgment
    error: Error
    operation_rejected: OperationRejected
    awareness_update: AwarenessUpdate
    yjs_doc_update: YjsDocUpdate
    blob_chunk_request: BlobChunkRequest
    blob_chunk_response: BlobChunkResponse
    blob_chunk_push: BlobChunkPush
    strings: _containers.RepeatedScalarFieldContainer[str]
    extra: Map
    def __init__(self, message_id: _Optional[str] = ..., message_uuid: _Optional[bytes] = ..., handshake: _Optional[_Union[Handshake, _Mapping]] = ..., handshake_response: _Optional[_Union[HandshakeResponse, _Mapping]] = ..., operation_batch: _Optional[_Union[OperationBatch, _Mapping]] = ..., acknowledgment: _Optional[_Union[Acknowledgment, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., operation_rejected: _Optional[_Union[OperationRejected, _Mapping]] = ..., awareness_update: _Optional[_Union[AwarenessUpdate, _Mapping]] = ..., yjs_doc_update: _Optional[_Union[YjsDocUpdate, _Mapping]] = ..., blob_chunk_request: _Optional[_Union[BlobChunkRequest, _Mapping]] = ..., blob_chunk_response: _Optional[_Union[BlobChunkResponse, _Mapping]] = ..., blob_chunk_push: _Optional[_Union[BlobChunkPush, _Mapping]] = ..., strings: _Optional[_Iterable[str]] = ..., extra: _Optional[_Union[Map, _Mapping]] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("null_value", "bool_value", "int_value", "double_value", "string_value", "kora_bytes", "big_int_value", "container", "items", "keys")
    NULL_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    KORA_BYTES_FIELD_NUMBER: _ClassVar[int]
    BIG_INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    null_value: NullValue
    bool_value: bool
    int_value: int
    double_value: float
    string_value: str
    kora_bytes: bytes
    big_int_value: str
    container: Container
    items: _containers.RepeatedCompositeFieldContainer[Value]
    keys: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, null_value: _Optional[_Union[NullValue, str]] = ..., bool_value: _Optional[bool] = ..., int_value: _Optional[int] = ..., double_value: _Optional[float] = ..., string_value: _Optional[str] = ..., kora_bytes: _Optional[bytes] = ..., big_int_value: _Optional[str] = ..., container: _Optional[_Union[Container, str]] = ..., items: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., keys: _Optional[_Iterable[int]] = ...) -> None: ...

class Map(_message.Message):
    __slots__ = ("keys", "kinds", "ints", "strs", "doubles", "values")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    INTS_FIELD_NUMBER: _ClassVar[int]
    STRS_FIELD_NUMBER: _ClassVar[int]
    DOUBLES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[int]
    kinds: bytes
    ints: _containers.RepeatedScalarFieldContainer[int]
    strs: _containers.RepeatedScalarFieldContainer[str]
    doubles: _containers.RepeatedScalarFieldContainer[float]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, keys: _Optional[_Iterable[int]] = ..., kinds: _Optional[bytes] = ..., ints: _Optional[_Iterable[int]] = ..., strs: _Optional[_Iterable[str]] = ..., doubles: _Optional[_Iterable[float]] = ..., values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class VersionEntry(_message.Message):
    __slots__ = ("node_text", "node_uuid", "sequence")
    NODE_TEXT_FIELD_NUMBER: _ClassVar[int]
    NODE_UUID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    node_text: str
    node_uuid: bytes
    sequence: int
    def __init__(self, node_text: _Optional[str] = ..., node_uuid: _Optional[bytes] = ..., sequence: _Optional[int] = ...) -> None: ...

class Handshake(_message.Message):
    __slots__ = ("node_text", "node_uuid", "version_vector", "schema_version", "auth_token", "supported_wire_formats", "sync_scope", "sync_queries", "delta_cursor", "last_delivery_sequence")
    NODE_TEXT_FIELD_NUMBER: _ClassVar[int]
    NODE_UUID_FIELD_NUMBER: _ClassVar[int]
    VERSION_VECTOR_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    AUTH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_WIRE_FORMATS_FIELD_NUMBER: _ClassVar[int]
    SYNC_SCOPE_FIELD_NUMBER: _ClassVar[int]
    SYNC_QUERIES_FIELD_NUMBER: _ClassVar[int]
    DELTA_CURSOR_FIELD_NUMBER: _ClassVar[int]
    LAST_DELIVERY_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    node_text: str
    node_uuid: bytes
    version_vector: _containers.RepeatedCompositeFieldContainer[VersionEntry]
    schema_version: int
    auth_token: str
    supported_wire_formats: StringList
    sync_scope: Map
    sync_queries: Value
    delta_cursor: str
    last_delivery_sequence: int
    def __init__(self, node_text: _Optional[str] = ..., node_uuid: _Optional[bytes] = ..., version_vector: _Optional[_Iterable[_Union[VersionEntry, _Mapping]]] = ..., schema_version: _Optional[int] = ..., auth_token: _Optional[str] = ..., supported_wire_formats: _Optional[_Union[StringList, _Mapping]] = ..., sync_scope: _Optional[_Union[Map, _Mapping]] = ..., sync_queries: _Optional[_Union[Value, _Mapping]] = ..., delta_cursor: _Optional[str] = ..., last_delivery_sequence: _Optional[int] = ...) -> None: ...

class HandshakeResponse(_message.Message):
    __slots__ = ("node_text", "node_uuid", "version_vector", "schema_version", "accepted", "reject_reason", "supported_schema_min", "supported_schema_max", "selected_wire_format", "server_time", "server_max_delivery_sequence", "blob_storage_enabled", "accepted_scope")
    NODE_TEXT_FIELD_NUMBER: _ClassVar[int]
    NODE_UUID_FIELD_NUMBER: _ClassVar[int]
    VERSION_VECTOR_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECT_REASON_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_SCHEMA_MIN_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_SCHEMA_MAX_FIELD_NUMBER: _ClassVar[int]
    SELECTED_WIRE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    SERVER_MAX_DELIVERY_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    BLOB_STORAGE_ENABLED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_SCOPE_FIELD_NUMBER: _ClassVar[int]
    node_text: str
    node_uuid: bytes
    version_vector: _containers.RepeatedCompositeFieldContainer[VersionEntry]
    schema_version: int
    accepted: bool
    reject_reason: str
    supported_schema_min: int
    supported_schema_max: int
    selected_wire_format: str
    server_time: int
    server_max_delivery_sequence: int
    blob_storage_enabled: bool
    accepted_scope: Map
    def __init__(self, node_text: _Optional[str] = ..., node_uuid: _Optional[bytes] = ..., version_vector: _Optional[_Iterable[_Union[VersionEntry, _Mapping]]] = ..., schema_version: _Optional[int] = ..., accepted: _Optional[bool] = ..., reject_reason: _Optional[str] = ..., supported_schema_min: _Optional[int] = ..., supported_schema_max: _Optional[int] = ..., selected_wire_format: _Optional[str] = ..., server_time: _Optional[int] = ..., server_max_delivery_sequence: _Optional[int] = ..., blob_storage_enabled: _Optional[bool] = ..., accepted_scope: _Optional[_Union[Map, _Mapping]] = ...) -> None: ...

class NodeId(_message.Message):
    __slots__ = ("text", "uuid")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    text: str
    uuid: bytes
    def __init__(self, text: _Optional[str] = ..., uuid: _Optional[bytes] = ...) -> None: ...

class AtomicOps(_message.Message):
    __slots__ = ("fields", "types", "values")
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.RepeatedScalarFieldContainer[int]
    types: _containers.RepeatedScalarFieldContainer[AtomicOpType]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, fields: _Optional[_Iterable[int]] = ..., types: _Optional[_Iterable[_Union[AtomicOpType, str]]] = ..., values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("id", "node", "type", "collection", "record_uuid", "record_text", "data_size", "previous_size", "wall_time_delta", "logical", "sequence_delta", "dep_refs", "dep_hashes", "details")
    ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    RECORD_UUID_FIELD_NUMBER: _ClassVar[int]
    RECORD_TEXT_FIELD_NUMBER: _ClassVar[int]
    DATA_SIZE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SIZE_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_DELTA_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    DEP_REFS_FIELD_NUMBER: _ClassVar[int]
    DEP_HASHES_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    id: bytes
    node: int
    type: OpType
    collection: int
    record_uuid: bytes
    record_text: str
    data_size: int
    previous_size: int
    wall_time_delta: int
    logical: int
    sequence_delta: int
    dep_refs: _containers.RepeatedScalarFieldContainer[int]
    dep_hashes: _containers.RepeatedScalarFieldContainer[bytes]
    details: OperationDetails
    def __init__(self, id: _Optional[bytes] = ..., node: _Optional[int] = ..., type: _Optional[_Union[OpType, str]] = ..., collection: _Optional[int] = ..., record_uuid: _Optional[bytes] = ..., record_text: _Optional[str] = ..., data_size: _Optional[int] = ..., previous_size: _Optional[int] = ..., wall_time_delta: _Optional[int] = ..., logical: _Optional[int] = ..., sequence_delta: _Optional[int] = ..., dep_refs: _Optional[_Iterable[int]] = ..., dep_hashes: _Optional[_Iterable[bytes]] = ..., details: _Optional[_Union[OperationDetails, _Mapping]] = ...) -> None: ...

class OperationDetails(_message.Message):
    __slots__ = ("id_text", "timestamp_node", "schema_version", "atomic_ops", "transaction_id", "mutation_name", "dep_texts")
    ID_TEXT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NODE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    ATOMIC_OPS_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    MUTATION_NAME_FIELD_NUMBER: _ClassVar[int]
    DEP_TEXTS_FIELD_NUMBER: _ClassVar[int]
    id_text: str
    timestamp_node: int
    schema_version: int
    atomic_ops: AtomicOps
    transaction_id: str
    mutation_name: str
    dep_texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id_text: _Optional[str] = ..., timestamp_node: _Optional[int] = ..., schema_version: _Optional[int] = ..., atomic_ops: _Optional[_Union[AtomicOps, _Mapping]] = ..., transaction_id: _Optional[str] = ..., mutation_name: _Optional[str] = ..., dep_texts: _Optional[_Iterable[str]] = ...) -> None: ...

class OperationBatch(_message.Message):
    __slots__ = ("operations", "is_final", "batch_index", "cursor", "total_batches", "base_delivery_sequence", "max_delivery_sequence", "nodes", "members")
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    BATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BATCHES_FIELD_NUMBER: _ClassVar[int]
    BASE_DELIVERY_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MAX_DELIVERY_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    operations: _containers.RepeatedCompositeFieldContainer[Operation]
    is_final: bool
    batch_index: int
    cursor: str
    total_batches: int
    base_delivery_sequence: int
    max_delivery_sequence: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeId]
    members: Map
    def __init__(self, operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ..., is_final: _Optional[bool] = ..., batch_index: _Optional[int] = ..., cursor: _Optional[str] = ..., total_batches: _Optional[int] = ..., base_delivery_sequence: _Optional[int] = ..., max_delivery_sequence: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeId, _Mapping]]] = ..., members: _Optional[_Union[Map, _Mapping]] = ...) -> None: ...

class Acknowledgment(_message.Message):
    __slots__ = ("acknowledged_text", "acknowledged_uuid", "last_sequence_number", "delivery_sequence")
    ACKNOWLEDGED_TEXT_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_UUID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    acknowledged_text: str
    acknowledged_uuid: bytes
    last_sequence_number: int
    delivery_sequence: int
    def __init__(self, acknowledged_text: _Optional[str] = ..., acknowledged_uuid: _Optional[bytes] = ..., last_sequence_number: _Optional[int] = ..., delivery_sequence: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "retriable")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRIABLE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    retriable: bool
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., retriable: _Optional[bool] = ...) -> None: ...

class OperationRejected(_message.Message):
    __slots__ = ("operation_id", "operation_id_text", "collection", "record_uuid", "record_text", "code", "message", "retriable")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_TEXT_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    RECORD_UUID_FIELD_NUMBER: _ClassVar[int]
    RECORD_TEXT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRIABLE_FIELD_NUMBER: _ClassVar[int]
    operation_id: bytes
    operation_id_text: str
    collection: str
    record_uuid: bytes
    record_text: str
    code: str
    message: str
    retriable: bool
    def __init__(self, operation_id: _Optional[bytes] = ..., operation_id_text: _Optional[str] = ..., collection: _Optional[str] = ..., record_uuid: _Optional[bytes] = ..., record_text: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ..., retriable: _Optional[bool] = ...) -> None: ...

class AwarenessUpdate(_message.Message):
    __slots__ = ("client_int", "client_double", "states")
    CLIENT_INT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_DOUBLE_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    client_int: int
    client_double: float
    states: Map
    def __init__(self, client_int: _Optional[int] = ..., client_double: _Optional[float] = ..., states: _Optional[_Union[Map, _Mapping]] = ...) -> None: ...

class YjsDocUpdate(_message.Message):
    __slots__ = ("collection", "record_text", "record_uuid", "field", "update", "update_text")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    RECORD_TEXT_FIELD_NUMBER: _ClassVar[int]
    RECORD_UUID_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TEXT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    record_text: str
    record_uuid: bytes
    field: str
    update: bytes
    update_text: str
    def __init__(self, collection: _Optional[str] = ..., record_text: _Optional[str] = ..., record_uuid: _Optional[bytes] = ..., field: _Optional[str] = ..., update: _Optional[bytes] = ..., update_text: _Optional[str] = ...) -> None: ...

class BlobChunkRequest(_message.Message):
    __slots__ = ("request_id", "hash", "hash_text")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_TEXT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    hash: bytes
    hash_text: str
    def __init__(self, request_id: _Optional[str] = ..., hash: _Optional[bytes] = ..., hash_text: _Optional[str] = ...) -> None: ...

class BlobChunkResponse(_message.Message):
    __slots__ = ("request_id", "chunk", "chunk_text")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_TEXT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    chunk: bytes
    chunk_text: str
    def __init__(self, request_id: _Optional[str] = ..., chunk: _Optional[bytes] = ..., chunk_text: _Optional[str] = ...) -> None: ...

class BlobChunkPush(_message.Message):
    __slots__ = ("hash", "hash_text", "chunk", "chunk_text")
    HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_TEXT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_TEXT_FIELD_NUMBER: _ClassVar[int]
    hash: bytes
    hash_text: str
    chunk: bytes
    chunk_text: str
    def __init__(self, hash: _Optional[bytes] = ..., hash_text: _Optional[str] = ..., chunk: _Optional[bytes] = ..., chunk_text: _Optional[str] = ...) -> None: ...
