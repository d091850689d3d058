"""What the server configures of the protocol layer: decoder limits, and the operation size.

Framing, negotiation, decoding (lenient for a batch's malformed operations) and the session
rules are ``kora.protocol``'s (``ServerSession``); the server only decides the limits.
"""

from __future__ import annotations

from kora.core.canonical import json_stringify
from kora.core.operation import Operation
from kora.core.operations import operation_to_wire
from kora.protocol.limits import Limits
from kora.server.config import ServerLimits

__all__ = ["codec_limits", "operation_size", "operation_text", "text_size"]


def codec_limits(limits: ServerLimits) -> Limits:
    """Decoder limits of a server: the operation size is checked per op by the session
    (``OPERATION_TOO_LARGE`` for that op only, in either wire format), so the codec only
    bounds the frame."""
    return Limits(
        max_frame_bytes=limits.max_message_bytes,
        max_operations_per_batch=limits.max_batch_operations,
        max_operation_bytes=limits.max_message_bytes,
    )


def operation_size(op: Operation) -> int:
    """UTF-8 bytes of the operation's JSON, as the reference measures it (spec 8.4)."""
    return text_size(operation_text(op))


def operation_text(op: Operation) -> str:
    """The operation's JSON as the reference sends it (``JSON.stringify`` of its wire form):
    what ``operation_size`` measures, and what a relay frame holds for it."""
    return json_stringify(operation_to_wire(op))


def text_size(text: str) -> int:
    """UTF-8 bytes of ``text`` (a lone surrogate counts as its three bytes)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
