"""Wire-format negotiation and the per-connection frame codec used by both roles.

Tokens in ``supportedWireFormats`` / ``selectedWireFormat``:

* ``"json"``: the reference's JSON, always supported.
* ``"kora-pb1"``: our binary format (``BinaryCodec``).  We never list or select
  ``"protobuf"``: that token means the reference's hand-rolled layout, which we do not speak,
  and a Kora.js server answers ``"protobuf"`` exactly when a client lists it (spec 2.5).

Rules:

* A client offers ``["kora-pb1", "json"]`` (or just ``["json"]``) and switches only when the
  response selects ``"kora-pb1"``; any other answer, ``"protobuf"`` included, keeps JSON.
* A server selects ``"kora-pb1"`` only when the client listed it and binary is enabled on the
  server, else ``"json"``.
* The handshake and its response are always JSON.  Both sides switch right after the
  response: the server once it has encoded it, the client once it has decoded it.
* The frame type decides the decoder: a text frame is JSON; a binary frame is ``kora-pb1``
  once negotiated, and UTF-8 JSON otherwise (spec 2.1: JSON may arrive in binary frames).
  A binary frame that starts with ``{`` is JSON in either mode (no ``kora-pb1`` frame starts
  with that byte).  Anything else is a ``WireFormatMismatchError``, never a silent drop.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TypeAlias

from kora.protocol.binary_codec import BinaryCodec
from kora.protocol.errors import LocalProtocolError, WireFormatMismatchError
from kora.protocol.json_codec import JsonCodec
from kora.protocol.limits import DEFAULT_LIMITS, Limits
from kora.protocol.malformed import MalformedOperation
from kora.protocol.messages import Message
from kora.protocol.shared_encoding import SharedEncodings

__all__ = [
    "Frame",
    "FrameCodec",
    "WireFormat",
    "offered_wire_formats",
    "select_wire_format",
    "wire_format_from_response",
]

#: A WebSocket message: ``str`` for a text frame, ``bytes`` for a binary frame.
Frame: TypeAlias = str | bytes

# A JSON frame starts with "{" (0x7b), possibly after whitespace.  No kora-pb1 frame starts
# with "{" (it would be field 15 as a group), but "\n" (0x0a) is Envelope.message_id's tag, so
# whitespace alone proves nothing.
_WHITESPACE = b" \t\r\n"
_BRACE = ord("{")


def _starts_like_json(frame: bytes | bytearray | memoryview) -> bool:
    return bytes(frame[:64]).lstrip(_WHITESPACE)[:1] == b"{"


class WireFormat(enum.StrEnum):
    JSON = "json"
    KORA_PB1 = "kora-pb1"


def offered_wire_formats(*, binary: bool) -> tuple[str, ...]:
    """What a client lists in ``supportedWireFormats`` (preferred first)."""
    return (WireFormat.KORA_PB1.value, WireFormat.JSON.value) if binary else ("json",)


def select_wire_format(offered: Sequence[str] | None, *, binary: bool) -> WireFormat:
    """The server's choice for a client that listed ``offered``."""
    if binary and offered is not None and WireFormat.KORA_PB1.value in offered:
        return WireFormat.KORA_PB1
    return WireFormat.JSON


def wire_format_from_response(selected: str | None, offered: Sequence[str]) -> WireFormat:
    """The client's format after a response that selected ``selected``.

    Only our own token switches, and only if we offered it: a server that answers
    ``"protobuf"`` (every Kora.js server does when asked) keeps us on JSON.
    """
    if selected == WireFormat.KORA_PB1.value and selected in offered:
        return WireFormat.KORA_PB1
    return WireFormat.JSON


class FrameCodec:
    """Encodes and decodes the frames of one connection; starts in JSON.

    Args:
        limits: Decoder limits for both formats.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.json = JsonCodec(limits)
        self._binary: BinaryCodec | None = None
        self._limits = limits
        self.wire_format = WireFormat.JSON

    def switch_to(self, wire_format: WireFormat) -> None:
        """Use ``wire_format`` for every frame encoded from now on."""
        if wire_format is WireFormat.KORA_PB1 and self._binary is None:
            self._binary = BinaryCodec(self._limits)
        self.wire_format = wire_format

    def encode(self, message: Message, shared: SharedEncodings | None = None) -> Frame:
        """A text frame (JSON) or a binary frame (``kora-pb1``), per the current format.

        ``shared``: operations encoded once for many sessions (the frame is the same).
        """
        if self.wire_format is WireFormat.KORA_PB1:
            assert self._binary is not None
            return self._binary.encode(message, shared)
        return self.json.encode(message, shared)

    def decode(self, frame: Frame | bytearray | memoryview) -> Message:
        """The message in one received frame; the frame type picks the decoder.

        Raises:
            RemoteProtocolError: If the frame does not decode (see the module docstring).
        """
        if self._is_json(frame):
            return self.json.decode(frame)
        assert self._binary is not None
        assert not isinstance(frame, str)
        return self._binary.decode(frame)

    def decode_lenient(
        self, frame: Frame | bytearray | memoryview
    ) -> tuple[Message, tuple[MalformedOperation, ...]]:
        """``decode``, with a batch's malformed operations set aside one by one.

        JSON frames only (``JsonCodec.decode_lenient``).  A ``kora-pb1`` frame is decoded
        strictly: its operations share the batch's tables and deltas, so a bad one is a
        broken encoder rather than one bad record, and the frame fails whole.
        """
        if self._is_json(frame):
            return self.json.decode_lenient(frame)
        assert self._binary is not None
        assert not isinstance(frame, str)
        return self._binary.decode(frame), ()

    def _is_json(self, frame: Frame | bytearray | memoryview) -> bool:
        """Whether ``frame`` goes to the JSON decoder (else to the negotiated binary one)."""
        if isinstance(frame, str):
            return True
        if not isinstance(frame, bytes | bytearray | memoryview):
            raise LocalProtocolError(f"a frame is str or bytes, got {type(frame).__name__}")
        first = frame[0] if len(frame) else None
        if first == _BRACE:
            return True
        if self.wire_format is WireFormat.KORA_PB1:
            return False
        if _starts_like_json(frame):
            return True
        raise WireFormatMismatchError(
            "binary frame is not UTF-8 JSON and kora-pb1 was not negotiated on this connection"
        )
