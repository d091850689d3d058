"""Errors of the sync protocol layer.

Two kinds, as in h11 and wsproto:

* ``LocalProtocolError``: this process asked a state machine or codec to do something the
  protocol forbids (send a batch before the handshake, encode an invalid value).  A bug here.
* ``RemoteProtocolError``: the peer sent something we must not accept.  Every one carries a
  stable ``code`` (used in logs, metrics and, where it fits, in an ``error`` message to the
  peer) and a ``fatal`` flag: fatal errors mean the connection cannot go on; non-fatal ones
  (a malformed side-channel message) mean "drop this frame, keep the session".

Every ``RemoteProtocolError`` subclass below has its own code; ``docs/protocol.md`` lists them.
"""

from __future__ import annotations

from typing import ClassVar

from kora.core.errors import KoraError, LocalError, RemoteError

__all__ = [
    "BinaryDecodeError",
    "DuplicateHandshakeError",
    "DuplicateKeyError",
    "FrameTooLargeError",
    "HandshakeRequiredError",
    "InvalidJsonError",
    "InvalidNumberError",
    "InvalidOperationError",
    "InvalidStringError",
    "InvalidValueError",
    "LocalProtocolError",
    "MissingFieldError",
    "NestingTooDeepError",
    "OperationTooLargeError",
    "ProtocolError",
    "RemoteProtocolError",
    "TooManyOperationsError",
    "UnexpectedAcknowledgmentError",
    "UnexpectedMessageError",
    "UnknownMessageTypeError",
    "VersionVectorTooLargeError",
    "WireFormatMismatchError",
    "WrongTypeError",
]


class ProtocolError(KoraError):
    """Base class of every error of the protocol layer."""


class LocalProtocolError(ProtocolError, LocalError):
    """This process violated the protocol (wrong state, unencodable value)."""


class RemoteProtocolError(ProtocolError, RemoteError):
    """The peer violated the protocol.

    Attributes:
        code: Stable machine-readable code (class attribute, one per subclass).
        fatal: True when the connection cannot continue after this error.  False for a
            frame that can simply be dropped (a malformed side-channel message).
    """

    code: str = "PROTOCOL_ERROR"
    #: Default of ``fatal`` for instances of this class.
    fatal_by_default: ClassVar[bool] = True

    def __init__(self, message: str, *, code: str | None = None, fatal: bool | None = None):
        super().__init__(message, code=code)
        self.fatal: bool = self.fatal_by_default if fatal is None else fatal


# ---------------------------------------------------------------- framing and parsing


class FrameTooLargeError(RemoteProtocolError):
    """A frame is larger than ``Limits.max_frame_bytes``."""

    code = "FRAME_TOO_LARGE"


class InvalidJsonError(RemoteProtocolError):
    """A frame is not one JSON object (syntax error, trailing data, not an object)."""

    code = "INVALID_JSON"


class DuplicateKeyError(RemoteProtocolError):
    """A JSON object repeats a key (ambiguous: parsers disagree on which value wins)."""

    code = "DUPLICATE_KEY"


class NestingTooDeepError(RemoteProtocolError):
    """Arrays/objects (or binary values) nest deeper than ``Limits.max_nesting_depth``."""

    code = "NESTING_TOO_DEEP"


class InvalidNumberError(RemoteProtocolError):
    """NaN/Infinity literals, numbers too long to parse, or integers out of the safe range."""

    code = "INVALID_NUMBER"


class InvalidStringError(RemoteProtocolError):
    """Text that is not valid UTF-8, or a string with an unpaired surrogate."""

    code = "INVALID_STRING"


class BinaryDecodeError(RemoteProtocolError):
    """A binary (kora-pb1) frame does not parse, or breaks the format's own rules."""

    code = "BINARY_DECODE_ERROR"


class WireFormatMismatchError(RemoteProtocolError):
    """A frame arrived in a format that the negotiated wire format does not allow."""

    code = "WIRE_FORMAT_MISMATCH"


# ---------------------------------------------------------------- message shape


class UnknownMessageTypeError(RemoteProtocolError):
    """The ``type`` is not one of the eleven message types of the protocol."""

    code = "UNKNOWN_MESSAGE_TYPE"


class MissingFieldError(RemoteProtocolError):
    """A required field is absent."""

    code = "MISSING_FIELD"


class WrongTypeError(RemoteProtocolError):
    """A field has the wrong JSON type (note: ``true`` is not an integer)."""

    code = "WRONG_TYPE"


class InvalidValueError(RemoteProtocolError):
    """A field has the right type but a value outside its domain (negative counter...)."""

    code = "INVALID_VALUE"


class InvalidOperationError(RemoteProtocolError):
    """An operation inside a batch is malformed."""

    code = "INVALID_OPERATION"


# ---------------------------------------------------------------- limits


class TooManyOperationsError(RemoteProtocolError):
    """A batch holds more than ``Limits.max_operations_per_batch`` operations."""

    code = "TOO_MANY_OPERATIONS"


class OperationTooLargeError(RemoteProtocolError):
    """One operation is larger than ``Limits.max_operation_bytes``."""

    code = "OPERATION_TOO_LARGE"


class VersionVectorTooLargeError(RemoteProtocolError):
    """A version vector has more than ``Limits.max_version_vector_entries`` entries."""

    code = "VERSION_VECTOR_TOO_LARGE"


# ---------------------------------------------------------------- session rules


class HandshakeRequiredError(RemoteProtocolError):
    """The client sent something other than a handshake before its handshake completed."""

    code = "HANDSHAKE_REQUIRED"


class DuplicateHandshakeError(RemoteProtocolError):
    """The client sent a second handshake on one connection."""

    code = "DUPLICATE_HANDSHAKE"


class UnexpectedMessageError(RemoteProtocolError):
    """A message that the receiving role never accepts, or not in the current phase."""

    code = "UNEXPECTED_MESSAGE"


class UnexpectedAcknowledgmentError(RemoteProtocolError):
    """An acknowledgment arrived while none of our batches was waiting for one."""

    code = "UNEXPECTED_ACKNOWLEDGMENT"
