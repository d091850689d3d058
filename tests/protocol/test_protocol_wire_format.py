"""Negotiation tokens and frame-type dispatch (FrameCodec)."""

from __future__ import annotations

import pytest

from kora.protocol import (
    BinaryCodec,
    ErrorMessage,
    FrameCodec,
    JsonCodec,
    LocalProtocolError,
    RemoteProtocolError,
    WireFormat,
    offered_wire_formats,
    select_wire_format,
    wire_format_from_response,
)

MESSAGE = ErrorMessage(message_id="e", code="C", message="m", retriable=False)
JSON_TEXT = JsonCodec().encode(MESSAGE)
BINARY = BinaryCodec().encode(MESSAGE)


def test_tokens() -> None:
    assert offered_wire_formats(binary=True) == ("kora-pb1", "json")
    assert offered_wire_formats(binary=False) == ("json",)
    assert select_wire_format(["json", "protobuf"], binary=True) is WireFormat.JSON
    assert select_wire_format(["kora-pb1"], binary=True) is WireFormat.KORA_PB1
    assert select_wire_format(["kora-pb1"], binary=False) is WireFormat.JSON
    assert select_wire_format(None, binary=True) is WireFormat.JSON
    assert wire_format_from_response("protobuf", ("kora-pb1", "json")) is WireFormat.JSON
    assert wire_format_from_response("kora-pb1", ("json",)) is WireFormat.JSON
    assert wire_format_from_response("kora-pb1", ("kora-pb1", "json")) is WireFormat.KORA_PB1


def test_before_negotiation_binary_frames_are_utf8_json() -> None:
    codec = FrameCodec()
    assert codec.encode(MESSAGE) == JSON_TEXT
    assert codec.decode(JSON_TEXT) == MESSAGE
    assert codec.decode(JSON_TEXT.encode()) == MESSAGE
    assert codec.decode(bytearray(b" \n" + JSON_TEXT.encode())) == MESSAGE
    for frame in (BINARY, b"", b"\x00garbage"):
        with pytest.raises(RemoteProtocolError) as caught:
            codec.decode(frame)
        assert caught.value.code == "WIRE_FORMAT_MISMATCH"
    with pytest.raises(LocalProtocolError):
        codec.decode(12)  # type: ignore[arg-type]


def test_after_negotiation_binary_frames_are_ours_and_text_stays_json() -> None:
    codec = FrameCodec()
    codec.switch_to(WireFormat.KORA_PB1)
    assert codec.encode(MESSAGE) == BINARY
    assert codec.decode(BINARY) == MESSAGE
    assert codec.decode(memoryview(BINARY)) == MESSAGE
    assert codec.decode(JSON_TEXT) == MESSAGE
    assert codec.decode(JSON_TEXT.encode()) == MESSAGE  # starts with "{": JSON, not ours
    with pytest.raises(RemoteProtocolError) as caught:
        codec.decode(b"\xff\xff\xff")
    assert caught.value.code == "BINARY_DECODE_ERROR"
