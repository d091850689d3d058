"""The session's codec: ``kora.protocol``'s ``FrameCodec`` plus what the server adds.

Negotiation and the frame rules are the protocol layer's (``kora.protocol.wire_format``):
JSON always, ``kora-pb1`` once negotiated, JSON accepted in binary frames.  The server adds
the per-operation size of spec 8.4 and the salvage of a batch with malformed operations.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import attrs

from kora.core.canonical import json_stringify
from kora.core.operation import Operation
from kora.core.operations import operation_to_wire
from kora.protocol.errors import RemoteProtocolError
from kora.protocol.limits import Limits
from kora.protocol.messages import Message, OperationBatch
from kora.protocol.wire_format import FrameCodec, WireFormat, select_wire_format
from kora.server.config import ServerLimits
from kora.server.transport import Frame

__all__ = ["BINARY_FORMAT", "JSON_FORMAT", "MalformedOperation", "SalvagedBatch", "WireCodec"]

JSON_FORMAT: Final = WireFormat.JSON.value
#: Our binary format's name in ``supportedWireFormats`` / ``selectedWireFormat``.  The
#: reference's ``"protobuf"`` is a different encoding that we never select (spec 2.5).
BINARY_FORMAT: Final = WireFormat.KORA_PB1.value


@attrs.frozen
class MalformedOperation:
    """An operation of a batch that does not decode, with what identifies it."""

    index: int
    operation_id: str
    collection: str
    record_id: str
    reason: str


@attrs.frozen
class SalvagedBatch:
    """A batch whose well-formed operations were kept and malformed ones set aside.

    Attributes:
        batch: The batch with only the operations that decode (in order).
        malformed: The others, each with its position in the original batch.
        positions: The position in the original batch of each operation of ``batch``.
        last_sequence_number: ``sequenceNumber`` of the original batch's last operation (0
            if it has none that is an integer): what the acknowledgment reports.
    """

    batch: OperationBatch
    malformed: tuple[MalformedOperation, ...]
    positions: tuple[int, ...]
    last_sequence_number: int


def codec_limits(limits: ServerLimits) -> Limits:
    """Decoder limits of a server: the operation size is checked per op by the session
    (``OPERATION_TOO_LARGE`` for that op only), so the codec only bounds the frame."""
    return Limits(
        max_frame_bytes=limits.max_message_bytes,
        max_operations_per_batch=limits.max_batch_operations,
        max_operation_bytes=limits.max_message_bytes,
    )


class WireCodec:
    """One session's frame codec (``kora.protocol``'s ``FrameCodec``) and its negotiation."""

    def __init__(self, limits: ServerLimits) -> None:
        self._frames = FrameCodec(codec_limits(limits))
        self._json = self._frames.json

    @property
    def format(self) -> str:
        return self._frames.wire_format.value

    def negotiate(self, supported: Sequence[str] | None) -> str:
        """The format to answer in ``selectedWireFormat`` (JSON unless ours is offered)."""
        return select_wire_format(supported, binary=True).value

    def select(self, wire_format: str) -> None:
        """Switch the encoding of every frame after the handshake-response."""
        self._frames.switch_to(WireFormat(wire_format))

    def decode(self, frame: Frame) -> Message:
        return self._frames.decode(frame)

    def encode(self, message: Message) -> Frame:
        return self._frames.encode(message)

    def operation_size(self, op: Operation) -> int:
        """UTF-8 bytes of the operation's JSON, as the reference measures it (spec 8.4)."""
        return len(json_stringify(operation_to_wire(op)).encode("utf-8", "surrogatepass"))

    def salvage_batch(self, frame: Frame) -> SalvagedBatch | None:
        """Split a JSON ``operation-batch`` that failed on an operation into good and bad ops.

        Each operation is decoded on its own (in a one-operation copy of the batch), so it
        gets every check of the JSON codec.  Only called after ``decode`` raised
        ``InvalidOperationError``, i.e. after the frame passed the size, depth, syntax and
        envelope checks.

        Returns:
            ``None`` when the batch cannot be salvaged: a binary frame, or a malformed
            operation without a string ``id``, ``collection`` and ``recordId`` to name it by.
        """
        if isinstance(frame, bytes) and frame[:1] != b"{":
            return None
        try:
            wire = json.loads(frame)
            raw_ops = wire["operations"]
            envelope = self._json.decode(json_stringify({**wire, "operations": []}))
        except (ValueError, TypeError, KeyError, RemoteProtocolError):
            return None
        if not isinstance(envelope, OperationBatch) or not isinstance(raw_ops, list):
            return None
        good: list[Operation] = []
        positions: list[int] = []
        malformed: list[MalformedOperation] = []
        for index, raw in enumerate(raw_ops):
            try:
                single = self._json.decode(json_stringify({**wire, "operations": [raw]}))
            except RemoteProtocolError as exc:
                named = _identify(raw)
                if named is None:
                    return None
                malformed.append(MalformedOperation(index, *named, reason=str(exc)))
            else:
                assert isinstance(single, OperationBatch)
                good.extend(single.operations)
                positions.append(index)
        last = raw_ops[-1].get("sequenceNumber") if raw_ops and isinstance(raw_ops[-1], dict) else 0
        return SalvagedBatch(
            attrs.evolve(envelope, operations=tuple(good)),
            tuple(malformed),
            tuple(positions),
            last if type(last) is int and last >= 0 else 0,
        )


def _identify(raw: Any) -> tuple[str, str, str] | None:
    if not isinstance(raw, dict):
        return None
    names = (raw.get("id"), raw.get("collection"), raw.get("recordId"))
    if not all(isinstance(name, str) for name in names):
        return None
    return names  # type: ignore[return-value]
