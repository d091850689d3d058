"""What the session state machines ask their caller to do, or tell it.

Every method of ``ClientSession`` and ``ServerSession`` returns a list of these, in the order
the caller must act on them.  ``SendFrame`` is the only one that must always be acted on
(send the frame); the others carry decisions that need I/O (authenticate, apply to the
store) or information (an error arrived, the session is streaming).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeAlias

import attrs

from kora.core.operation import Operation
from kora.protocol.malformed import MalformedOperation
from kora.protocol.messages import (
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
from kora.protocol.wire_format import Frame, WireFormat

__all__ = [
    "AcknowledgmentReceived",
    "Action",
    "ApplyBatch",
    "BatchAcknowledged",
    "BatchIgnored",
    "ErrorReceived",
    "HandshakeAccepted",
    "HandshakeReceived",
    "HandshakeRejected",
    "OperationRejectedReceived",
    "OperationsReceived",
    "ReachedStreaming",
    "SendFrame",
    "SideChannelMessage",
    "SideChannelReceived",
    "WatermarkChanged",
]

SideChannelMessage: TypeAlias = (
    AwarenessUpdate | YjsDocUpdate | BlobChunkRequest | BlobChunkResponse | BlobChunkPush
)


# ---------------------------------------------------------------- both roles


@attrs.frozen
class SendFrame:
    """Send ``frame`` (``str``: text frame, ``bytes``: binary frame) to the peer."""

    frame: Frame
    message: Message


@attrs.frozen
class ErrorReceived:
    """The peer sent an ``error`` message."""

    message: ErrorMessage


@attrs.frozen
class SideChannelReceived:
    """An awareness, yjs or blob message arrived; route it or ignore it (spec 1.4)."""

    message: SideChannelMessage


@attrs.frozen
class ReachedStreaming:
    """The post-handshake exchange is over: the session now streams live changes."""


# ---------------------------------------------------------------- client role


@attrs.frozen
class HandshakeAccepted:
    """The server accepted our handshake.

    Attributes:
        response: The handshake-response.
        wire_format: The format both sides use from now on.
        watermark: Our delivery watermark after the reset rules of spec 4.4 (it may be 0
            now); a ``WatermarkChanged`` precedes this action when it changed.
    """

    response: HandshakeResponse
    wire_format: WireFormat
    watermark: int


@attrs.frozen
class HandshakeRejected:
    """The server refused the handshake (schema mismatch); the session is closed."""

    response: HandshakeResponse


@attrs.frozen
class ApplyBatch:
    """Apply ``batch.operations`` to the store, then call ``batch_applied`` or
    ``batch_apply_failed`` with ``batch.message_id``."""

    batch: OperationBatch


@attrs.frozen
class BatchIgnored:
    """A delivery batch was neither applied nor acknowledged (it does not chain)."""

    batch: OperationBatch
    reason: str


@attrs.frozen
class WatermarkChanged:
    """The delivery watermark moved (or was reset): persist it for the current view."""

    watermark: int


@attrs.frozen
class BatchAcknowledged:
    """The server acknowledged one of our batches: its operations may leave the queue."""

    batch: OperationBatch
    acknowledgment: Acknowledgment


@attrs.frozen
class OperationRejectedReceived:
    """The server refused one operation; record it, do not resend it."""

    message: OperationRejected


# ---------------------------------------------------------------- server role


@attrs.frozen
class HandshakeReceived:
    """Validate the handshake (auth, scope, schema), then call ``accept_handshake``,
    ``reject_schema`` or ``refuse_handshake``."""

    handshake: Handshake


@attrs.frozen
class OperationsReceived:
    """Process the client's batch op by op (sending per-op errors or rejections), then
    call ``batch_processed(batch.message_id)`` to acknowledge it.

    Attributes:
        batch: The batch, with the operations that decoded.
        malformed: With ``lenient_operations``: the operations that did not decode, in batch
            order; refuse each one (``send_operation_rejected`` takes them).
    """

    batch: OperationBatch
    malformed: tuple[MalformedOperation, ...] = ()

    def numbered_operations(self) -> Iterator[tuple[int, Operation]]:
        """The decoded operations with their positions in the batch as the client sent it."""
        if not self.malformed:
            yield from enumerate(self.batch.operations)
            return
        skipped = {m.index for m in self.malformed}
        operations = iter(self.batch.operations)
        for index in range(len(self.batch.operations) + len(self.malformed)):
            if index not in skipped:
                yield index, next(operations)


@attrs.frozen
class AcknowledgmentReceived:
    """The client acknowledged one of our batches.

    Attributes:
        acknowledgment: The message as received.
        delivered_through: The client's confirmed delivery position after this ack (the
            highest ``deliverySequence`` acknowledged so far, never beyond what we sent);
            re-push the delivery stream from here.
    """

    acknowledgment: Acknowledgment
    delivered_through: int


Action: TypeAlias = (
    SendFrame
    | ErrorReceived
    | SideChannelReceived
    | ReachedStreaming
    | HandshakeAccepted
    | HandshakeRejected
    | ApplyBatch
    | BatchIgnored
    | WatermarkChanged
    | BatchAcknowledged
    | OperationRejectedReceived
    | HandshakeReceived
    | OperationsReceived
    | AcknowledgmentReceived
)
