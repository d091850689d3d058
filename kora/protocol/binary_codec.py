"""``kora-pb1``: our binary wire format (proto/kora/sync/v1/sync.proto).

Every message round-trips exactly: ``decode(encode(m)) == m``, with integers staying ``int``
and floats staying ``float`` (``-0.0`` keeps its sign; NaN and infinities, which JSON cannot
carry either, are encoded as ``null`` the way ``JSON.stringify`` writes them).  The layout
tricks (string table, node table, raw ids, deltas, back-references) are described in the
``.proto`` file and in docs/protocol.md.  Encoding is in ``_binary_encode``, decoding (which
trusts nothing) in ``_binary_decode``.
"""

from __future__ import annotations

from typing import Final

import attrs
from google.protobuf.internal import api_implementation
from google.protobuf.message import DecodeError, EncodeError

from kora.core.json_types import JsonValue
from kora.core.operation import Operation
from kora.protocol._binary_common import FIELD_OF_TYPE, TYPE_OF_FIELD
from kora.protocol._binary_decode import Decoder, get_id
from kora.protocol._binary_encode import Encoder, put_id
from kora.protocol._pb import sync_pb2 as pb
from kora.protocol.errors import (
    BinaryDecodeError,
    FrameTooLargeError,
    LocalProtocolError,
    NestingTooDeepError,
    RemoteProtocolError,
    UnknownMessageTypeError,
)
from kora.protocol.limits import DEFAULT_LIMITS, Limits
from kora.protocol.messages import SIDE_CHANNEL_TYPES, Message, OperationBatch
from kora.protocol.shared_encoding import BinaryBatchParts, SharedEncodings

__all__ = ["BinaryCodec"]


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

    def encode(self, message: Message, shared: SharedEncodings | None = None) -> bytes:
        """One binary frame for ``message``.

        Args:
            message: What to encode.
            shared: Where an ``operation-batch``'s operations are encoded once for every
                session that sends the same batch (the bytes are the same either way).

        Raises:
            LocalProtocolError: If the message holds something the format cannot carry
                (a value that is not JSON, a negative counter, a lone surrogate).
        """
        if (
            shared is not None
            and type(message) is OperationBatch
            and message.operations
            and not message.extra
        ):
            return self._encode_batch(message, shared)
        name = FIELD_OF_TYPE.get(getattr(message, "TYPE", None))  # type: ignore[arg-type]
        if name is None:
            raise LocalProtocolError(f"not a protocol message: {message!r}")
        encoder = Encoder()
        envelope = pb.Envelope()
        try:
            put_id(envelope, "message_uuid", "message_id", message.message_id)
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

    def _encode_batch(self, message: OperationBatch, shared: SharedEncodings) -> bytes:
        # The frame is laid out as SerializeToString lays it out (fields in number order):
        # message id, then operation_batch = operations + this session's scalars + tables,
        # then the string table.  Only the id and the scalars are encoded per session.
        try:
            parts = shared.binary_batch(message.operations, _batch_parts)
            head = pb.Envelope()
            put_id(head, "message_uuid", "message_id", message.message_id)
            scalars = pb.OperationBatch(is_final=message.is_final, batch_index=message.batch_index)
            for name in ("cursor", "total_batches", "base_delivery_sequence", "max_delivery_sequence"):  # fmt: skip
                value = getattr(message, name)
                if value is not None:
                    setattr(scalars, name, value)
            body = parts.operations + scalars.SerializeToString() + parts.tables
        except (TypeError, ValueError, KeyError, AttributeError, EncodeError) as exc:
            raise LocalProtocolError(f"cannot encode {message.TYPE}: {exc}") from exc
        return b"".join(
            (head.SerializeToString(), _BATCH_TAG, _varint(len(body)), body, parts.strings)
        )

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
        try:
            message_id = get_id(envelope.message_uuid, envelope.message_id, "messageId")
            decoder = Decoder(envelope.strings, self.limits)
            body = getattr(envelope, name)
            if name == "operation_batch":
                message: Message = decoder.operation_batch(message_id, body, size)
            else:
                message = getattr(decoder, name)(message_id, body)
            if envelope.HasField("extra"):
                message = _with_extra(message, decoder.map(envelope.extra, 1))
            decoder.check_expansion(size)
            return message
        except RemoteProtocolError as exc:
            if TYPE_OF_FIELD[name] in SIDE_CHANNEL_TYPES:
                exc.fatal = False  # spec 1.4: never let a side channel end a session
            raise
        except RecursionError as exc:  # defensive: the depth checks come first
            raise NestingTooDeepError("values nest too deeply") from exc


#: Envelope.operation_batch's tag: field 5, length-delimited.
_BATCH_TAG: Final = bytes([5 << 3 | 2])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _batch_parts(operations: tuple[Operation, ...]) -> BinaryBatchParts:
    """The session-independent parts of a batch of ``operations`` (see ``SharedEncodings``)."""
    encoder = Encoder()
    body = pb.OperationBatch()
    encoder.operation_batch(
        body, OperationBatch(message_id="", operations=operations, is_final=False, batch_index=0)
    )
    full = body.SerializeToString()
    tables = pb.OperationBatch()
    tables.nodes.extend(body.nodes)
    if body.HasField("members"):
        tables.members.CopyFrom(body.members)
    tables_bytes = tables.SerializeToString()
    if not full.endswith(tables_bytes):  # pragma: no cover - the runtime orders by field number
        raise ValueError("unexpected field order in a serialized OperationBatch")
    strings = pb.Envelope()
    strings.strings.extend(encoder.strings)
    return BinaryBatchParts(
        full[: len(full) - len(tables_bytes)], tables_bytes, strings.SerializeToString()
    )


def _with_extra(message: Message, extra: dict[str, JsonValue]) -> Message:
    return attrs.evolve(message, extra=extra)
