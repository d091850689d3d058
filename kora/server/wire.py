"""The session's codec: JSON by default, the binary codec once negotiated.

Frames are decoded by kind: text frames and binary frames that hold JSON (a binary frame
whose first byte is ``{``, as Node delivers text) go to the JSON codec; other binary frames go
to the binary codec, but only after the session negotiated it.  Encoding follows the
negotiated format from the first frame after the handshake-response.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from kora.core.canonical import json_stringify
from kora.core.operation import Operation
from kora.core.operations import operation_to_wire
from kora.protocol.binary_codec import BinaryCodec
from kora.protocol.errors import InvalidStringError, WireFormatMismatchError
from kora.protocol.limits import Limits
from kora.protocol.messages import Message
from kora.server._interim_json import JsonCodec
from kora.server.config import ServerLimits
from kora.server.transport import Frame

__all__ = ["BINARY_FORMAT", "JSON_FORMAT", "WireCodec"]

JSON_FORMAT: Final = "json"
#: Our binary format's name in ``supportedWireFormats`` / ``selectedWireFormat``.  The
#: reference's ``"protobuf"`` is a different encoding that we never select (spec 2.5).
BINARY_FORMAT: Final = "kora-pb1"


def codec_limits(limits: ServerLimits) -> Limits:
    """Decoder limits of a server: the operation size is checked per op by the session
    (``OPERATION_TOO_LARGE`` for that op only), so the codec only bounds the frame."""
    return Limits(
        max_frame_bytes=limits.max_message_bytes,
        max_operations_per_batch=limits.max_batch_operations,
        max_operation_bytes=limits.max_message_bytes,
    )


class WireCodec:
    """One session's encoder/decoder and its negotiated format."""

    def __init__(self, limits: ServerLimits) -> None:
        self._limits = codec_limits(limits)
        self._json = JsonCodec(self._limits)
        self._binary: BinaryCodec | None = None
        self.format = JSON_FORMAT

    def negotiate(self, supported: Sequence[str] | None) -> str:
        """The format to answer in ``selectedWireFormat`` (JSON unless ours is offered)."""
        if supported and BINARY_FORMAT in supported:
            return BINARY_FORMAT
        return JSON_FORMAT

    def select(self, wire_format: str) -> None:
        """Switch the encoding of every frame after the handshake-response."""
        self.format = wire_format
        if wire_format == BINARY_FORMAT and self._binary is None:
            self._binary = BinaryCodec(self._limits)

    def decode(self, frame: Frame) -> Message:
        if isinstance(frame, str):
            return self._json.decode(frame)
        if frame[:1] == b"{" or self._binary is None:
            if self._binary is None and frame[:1] != b"{":
                raise WireFormatMismatchError(
                    "binary frame before the binary format was negotiated"
                )
            try:
                text = frame.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidStringError("binary frame is not UTF-8 JSON") from exc
            return self._json.decode(text)
        return self._binary.decode(frame)

    def encode(self, message: Message) -> Frame:
        if self._binary is not None and self.format == BINARY_FORMAT:
            return self._binary.encode(message)
        return self._json.encode(message)

    def operation_size(self, op: Operation) -> int:
        """UTF-8 bytes of the operation's JSON, as the reference measures it (spec 8.4)."""
        return len(json_stringify(operation_to_wire(op)).encode("utf-8", "surrogatepass"))
