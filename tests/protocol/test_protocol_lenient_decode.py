"""Lenient batch decoding: malformed operations are set aside one by one, the rest decode."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from protocol_helpers import make_op

from kora.core.canonical import json_stringify
from kora.core.operations import operation_to_wire
from kora.protocol import (
    AwarenessUpdate,
    BinaryCodec,
    FrameCodec,
    JsonCodec,
    Limits,
    MalformedOperation,
    OperationBatch,
    RemoteProtocolError,
    WireFormat,
)

JSON = JsonCodec()


def batch_text(wires: list[Any], **envelope: Any) -> str:
    return json_stringify(
        {
            "type": "operation-batch",
            "messageId": "b",
            "operations": wires,
            "isFinal": True,
            "batchIndex": 0,
            **envelope,
        }
    )


def broken(seq: int, how: str = "deps") -> dict[str, Any]:
    wire = operation_to_wire(make_op(seq))
    if how == "deps":
        del wire["causalDeps"]
    elif how == "logical":
        wire["timestamp"] = {**wire["timestamp"], "logical": True}
    elif how == "seq":
        wire["sequenceNumber"] = 2**60
    return wire


def test_a_batch_without_problems_decodes_as_with_decode() -> None:
    text = batch_text([operation_to_wire(make_op(s)) for s in (1, 2)])
    assert JSON.decode_lenient(text) == (JSON.decode(text), ())


def test_malformed_operations_are_named_and_the_rest_is_kept() -> None:
    text = batch_text(
        [broken(1), operation_to_wire(make_op(2)), broken(3, "logical"), broken(4, "seq")]
    )
    with pytest.raises(RemoteProtocolError) as caught:
        JSON.decode(text)
    assert caught.value.code == "INVALID_OPERATION"
    message, malformed = JSON.decode_lenient(text)
    assert isinstance(message, OperationBatch)
    assert message.operations == (make_op(2),)
    assert [(m.index, m.id, m.collection, m.record_id) for m in malformed] == [
        (0, make_op(1).id, "todos", "rec-1"),
        (2, make_op(3).id, "todos", "rec-3"),
        (3, make_op(4).id, "todos", "rec-4"),
    ]
    assert {m.code for m in malformed} == {"INVALID_OPERATION"}
    # A sequence number beyond 2**53-1 is not reported back.
    assert [m.sequence_number for m in malformed] == [1, 3, None]
    assert "causalDeps" in malformed[0].reason


@pytest.mark.parametrize(
    "unnamed",
    [
        "not an operation",
        {"collection": "todos", "recordId": "r"},  # no id
        {"id": "x", "collection": 5, "recordId": "r"},
    ],
)
def test_an_operation_that_cannot_be_named_fails_the_frame(unnamed: Any) -> None:
    text = batch_text([operation_to_wire(make_op(1)), unnamed])
    with pytest.raises(RemoteProtocolError) as caught:
        JSON.decode_lenient(text)
    assert (caught.value.code, caught.value.fatal) == ("INVALID_OPERATION", True)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (batch_text([broken(1)], isFinal="yes"), "WRONG_TYPE"),
        ('{"type":"operation-batch","messageId":"b","messageId":"c"}', "DUPLICATE_KEY"),
        ("[1]", "INVALID_JSON"),
    ],
)
def test_the_envelope_is_as_strict_as_ever(text: str, code: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        JSON.decode_lenient(text)
    assert caught.value.code == code


def test_oversized_operations_are_set_aside_too() -> None:
    codec = JsonCodec(Limits(max_operation_bytes=2048))
    big = make_op(1)
    big_wire = {**operation_to_wire(big), "data": {"blob": "x" * 4096}}
    text = batch_text([big_wire, operation_to_wire(make_op(2))])
    with pytest.raises(RemoteProtocolError) as caught:
        codec.decode(text)
    assert caught.value.code == "OPERATION_TOO_LARGE"
    message, (too_large,) = codec.decode_lenient(text)
    assert isinstance(message, OperationBatch)
    assert message.operations == (make_op(2),)
    assert (too_large.index, too_large.code) == (0, "OPERATION_TOO_LARGE")


def test_other_messages_pass_through() -> None:
    awareness = AwarenessUpdate(message_id="a", client_id=1, states={})
    assert JSON.decode_lenient(JSON.encode(awareness)) == (awareness, ())


def test_frame_codec_is_lenient_for_json_frames_only() -> None:
    text = batch_text([broken(1), operation_to_wire(make_op(2))])
    codec = FrameCodec()
    for frame in (text, text.encode()):
        _, malformed = codec.decode_lenient(frame)
        assert [m.index for m in malformed] == [0]
    codec.switch_to(WireFormat.KORA_PB1)
    _, malformed = codec.decode_lenient(text.encode())  # JSON in a binary frame
    assert [m.index for m in malformed] == [0]
    good = OperationBatch(message_id="b", operations=(make_op(1),), is_final=True, batch_index=0)
    assert codec.decode_lenient(BinaryCodec().encode(good)) == (good, ())


@given(st.lists(st.booleans(), max_size=12))
def test_exactly_the_broken_operations_are_set_aside(pattern: list[bool]) -> None:
    wires = [
        broken(i + 1) if bad else operation_to_wire(make_op(i + 1)) for i, bad in enumerate(pattern)
    ]
    message, malformed = JSON.decode_lenient(batch_text(wires))
    assert isinstance(message, OperationBatch)
    assert [m.index for m in malformed] == [i for i, bad in enumerate(pattern) if bad]
    assert message.operations == tuple(make_op(i + 1) for i, bad in enumerate(pattern) if not bad)
    assert all(isinstance(m, MalformedOperation) for m in malformed)
