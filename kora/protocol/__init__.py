"""Sans-I/O sync protocol: messages, codecs, session state machines, limits.

Nothing here does I/O or imports trio: frames go in, messages, frames and actions come out.

* ``messages``: the eleven message types of the Kora sync protocol v1.
* ``JsonCodec``: the reference-compatible JSON format; ``BinaryCodec``: our ``kora-pb1``.
* ``FrameCodec`` and ``WireFormat``: per-connection negotiation and frame-type dispatch.
* ``ClientSession`` and ``ServerSession``: the two roles as state machines.
* ``MalformedOperation``: what a lenient decode reports per malformed operation.
* ``SharedEncodings``: operations encoded once for the many sessions that relay them.
* ``Limits`` and the ``ProtocolError`` hierarchy.

See docs/protocol.md.
"""

from kora.protocol.actions import (
    AcknowledgmentReceived,
    Action,
    ApplyBatch,
    BatchAcknowledged,
    BatchIgnored,
    ErrorReceived,
    HandshakeAccepted,
    HandshakeReceived,
    HandshakeRejected,
    OperationRejectedReceived,
    OperationsReceived,
    ReachedStreaming,
    SendFrame,
    SideChannelReceived,
    WatermarkChanged,
)
from kora.protocol.binary_codec import BinaryCodec
from kora.protocol.client import ClientSession, ClientState
from kora.protocol.errors import (
    BinaryDecodeError,
    DuplicateHandshakeError,
    DuplicateKeyError,
    FrameTooLargeError,
    HandshakeRequiredError,
    InvalidJsonError,
    InvalidNumberError,
    InvalidOperationError,
    InvalidStringError,
    InvalidValueError,
    LocalProtocolError,
    MissingFieldError,
    NestingTooDeepError,
    OperationTooLargeError,
    ProtocolError,
    RemoteProtocolError,
    TooManyOperationsError,
    UnexpectedAcknowledgmentError,
    UnexpectedMessageError,
    UnknownMessageTypeError,
    VersionVectorTooLargeError,
    WireFormatMismatchError,
    WrongTypeError,
)
from kora.protocol.json_codec import JsonCodec
from kora.protocol.limits import DEFAULT_LIMITS, MAX_SAFE_INTEGER, Limits
from kora.protocol.malformed import MalformedOperation
from kora.protocol.messages import (
    MESSAGE_TYPES,
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
from kora.protocol.server import SCHEMA_MISMATCH_PREFIX, ServerSession, ServerState
from kora.protocol.shared_encoding import SharedEncodings
from kora.protocol.wire_format import (
    Frame,
    FrameCodec,
    WireFormat,
    offered_wire_formats,
    select_wire_format,
    wire_format_from_response,
)

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_SAFE_INTEGER",
    "MESSAGE_TYPES",
    "SCHEMA_MISMATCH_PREFIX",
    "SIDE_CHANNEL_TYPES",
    "Acknowledgment",
    "AcknowledgmentReceived",
    "Action",
    "ApplyBatch",
    "AwarenessUpdate",
    "BatchAcknowledged",
    "BatchIgnored",
    "BinaryCodec",
    "BinaryDecodeError",
    "BlobChunkPush",
    "BlobChunkRequest",
    "BlobChunkResponse",
    "ClientSession",
    "ClientState",
    "DuplicateHandshakeError",
    "DuplicateKeyError",
    "ErrorMessage",
    "ErrorReceived",
    "Frame",
    "FrameCodec",
    "FrameTooLargeError",
    "Handshake",
    "HandshakeAccepted",
    "HandshakeReceived",
    "HandshakeRejected",
    "HandshakeRequiredError",
    "HandshakeResponse",
    "InvalidJsonError",
    "InvalidNumberError",
    "InvalidOperationError",
    "InvalidStringError",
    "InvalidValueError",
    "JsonCodec",
    "Limits",
    "LocalProtocolError",
    "MalformedOperation",
    "Message",
    "MissingFieldError",
    "NestingTooDeepError",
    "OperationBatch",
    "OperationRejected",
    "OperationRejectedReceived",
    "OperationTooLargeError",
    "OperationsReceived",
    "ProtocolError",
    "ReachedStreaming",
    "RemoteProtocolError",
    "SendFrame",
    "ServerSession",
    "ServerState",
    "SharedEncodings",
    "SideChannelReceived",
    "TooManyOperationsError",
    "UnexpectedAcknowledgmentError",
    "UnexpectedMessageError",
    "UnknownMessageTypeError",
    "VersionVectorTooLargeError",
    "WatermarkChanged",
    "WireFormat",
    "WireFormatMismatchError",
    "WrongTypeError",
    "YjsDocUpdate",
    "offered_wire_formats",
    "select_wire_format",
    "wire_format_from_response",
]
