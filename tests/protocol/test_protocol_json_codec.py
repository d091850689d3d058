"""The JSON codec refuses every malformed frame with a stable code (reliability.md section 4)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kora.protocol import (
    Acknowledgment,
    AwarenessUpdate,
    ErrorMessage,
    JsonCodec,
    Limits,
    LocalProtocolError,
    OperationBatch,
    RemoteProtocolError,
)

CODEC = JsonCodec()
OP_ID = "9ffd310a21534d4e0d18a6514fa486bd0c3957a0ba8d279c04ce277a751e6d06"


def op(**changes: Any) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "id": OP_ID,
        "nodeId": "node-1",
        "type": "insert",
        "collection": "todos",
        "recordId": "rec-1",
        "data": {"title": "test", "completed": False},
        "previousData": None,
        "timestamp": {"wallTime": 1700000000000, "logical": 0, "nodeId": "node-1"},
        "sequenceNumber": 1,
        "causalDeps": [],
        "schemaVersion": 1,
    }
    wire.update(changes)
    return wire


def batch(*operations: dict[str, Any], **changes: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "operation-batch",
        "messageId": "m-1",
        "operations": list(operations),
        "isFinal": True,
        "batchIndex": 0,
    }
    message.update(changes)
    return message


def text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def refused(frame: str | bytes, codec: JsonCodec = CODEC) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as caught:
        codec.decode(frame)
    return caught.value


ACK = {
    "type": "acknowledgment",
    "messageId": "k",
    "acknowledgedMessageId": "b",
    "lastSequenceNumber": 0,
}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("", "INVALID_JSON"),
        ("not json", "INVALID_JSON"),
        ('{"type":"acknowledgment"', "INVALID_JSON"),
        (text(ACK) + " {}", "INVALID_JSON"),
        ("[1,2]", "INVALID_JSON"),
        ('"just a string"', "INVALID_JSON"),
        ("\ufeff" + text(ACK), "INVALID_JSON"),
        ('{"type":"error","type":"error"}', "DUPLICATE_KEY"),
        (text(batch(op())).replace('"title":"test"', '"title":"a","title":"b"'), "DUPLICATE_KEY"),
        ("[" * 100_000 + "]" * 100_000, "NESTING_TOO_DEEP"),
        ('{"a":' * 70 + "1" + "}" * 70, "NESTING_TOO_DEEP"),
        ("[" + "[],[" * 80 + "]" * 80 + "]", "NESTING_TOO_DEEP"),
        ('{"type":"x","v":NaN}', "INVALID_NUMBER"),
        ('{"type":"x","v":Infinity}', "INVALID_NUMBER"),
        ('{"type":"x","v":-Infinity}', "INVALID_NUMBER"),
        ('{"type":"x","v":1e400}', "INVALID_NUMBER"),
        ('{"type":"x","v":' + "9" * 5000 + "}", "INVALID_NUMBER"),
        (
            '{"type":"error","messageId":"\\ud800","code":"C","message":"m","retriable":false}',
            "INVALID_STRING",
        ),
        (
            '{"type":"error","messageId":"a\\udc00b","code":"C","message":"m","retriable":false}',
            "INVALID_STRING",
        ),
        ('{"\\ud800":1,"type":"error"}', "INVALID_STRING"),
        (
            '{"type":"error","messageId":"\ud800","code":"C","message":"m","retriable":false}',
            "INVALID_STRING",
        ),
        ('{"messageId":"m"}', "MISSING_FIELD"),
        ('{"type":"error","code":"C","message":"m","retriable":false}', "MISSING_FIELD"),
        ('{"type":"error","messageId":"e","code":"C","retriable":false}', "MISSING_FIELD"),
        (text({**ACK, "lastSequenceNumber": None}), "WRONG_TYPE"),
        ('{"type":7,"messageId":"m"}', "WRONG_TYPE"),
        ('{"type":"ping","messageId":"m"}', "UNKNOWN_MESSAGE_TYPE"),
        ('{"type":"protobuf","messageId":"m"}', "UNKNOWN_MESSAGE_TYPE"),
        (text({**ACK, "lastSequenceNumber": True}), "WRONG_TYPE"),
        (text({**ACK, "lastSequenceNumber": "5"}), "WRONG_TYPE"),
        (text({**ACK, "lastSequenceNumber": 1.5}), "WRONG_TYPE"),
        (text(ACK).replace('"lastSequenceNumber":0', '"lastSequenceNumber":1.0'), "WRONG_TYPE"),
        (text({**ACK, "messageId": 5}), "WRONG_TYPE"),
        (text({**ACK, "lastSequenceNumber": -1}), "INVALID_VALUE"),
        (text({**ACK, "lastSequenceNumber": 2**53}), "INVALID_VALUE"),
        (text({**ACK, "deliverySequence": False}), "WRONG_TYPE"),
        (text(batch(op(), isFinal=1)), "WRONG_TYPE"),
        (text(batch(operations={"0": op()})), "WRONG_TYPE"),
        (
            text(
                {
                    "type": "handshake",
                    "messageId": "h",
                    "nodeId": "n",
                    "versionVector": {"a": -1},
                    "schemaVersion": 1,
                }
            ),
            "INVALID_VALUE",
        ),
        (
            text(
                {
                    "type": "handshake",
                    "messageId": "h",
                    "nodeId": "n",
                    "versionVector": [],
                    "schemaVersion": 1,
                }
            ),
            "WRONG_TYPE",
        ),
        (
            text(
                {
                    "type": "handshake",
                    "messageId": "h",
                    "nodeId": "n",
                    "versionVector": {},
                    "schemaVersion": 1,
                    "syncScope": {"todos": 1},
                }
            ),
            "WRONG_TYPE",
        ),
        (text(batch(op(sequenceNumber=True))), "INVALID_OPERATION"),
        (text(batch(op(sequenceNumber=2**53))), "INVALID_OPERATION"),
        (
            text(batch(op(timestamp={"wallTime": 1.5, "logical": 0, "nodeId": "n"}))),
            "INVALID_OPERATION",
        ),
        (
            text(batch(op(timestamp={"wallTime": 1, "logical": -1, "nodeId": "n"}))),
            "INVALID_OPERATION",
        ),
        (
            text(batch(op(timestamp={"wallTime": 1, "logical": 100_000, "nodeId": "n"}))),
            "INVALID_OPERATION",
        ),
        (
            text(batch(op(timestamp={"wallTime": 2**63, "logical": 0, "nodeId": "n"}))),
            "INVALID_OPERATION",
        ),
        (text(batch(op(type="upsert"))), "INVALID_OPERATION"),
        (text(batch(op(causalDeps=None))), "INVALID_OPERATION"),
        (text(batch({k: v for k, v in op().items() if k != "timestamp"})), "INVALID_OPERATION"),
        (text(batch(op(type="update", previousData=None))), "INVALID_OPERATION"),
        (text(batch(op(), "not an op")), "INVALID_OPERATION"),
    ],
)
def test_malformed_frames_are_refused_with_a_stable_code(frame: str, code: str) -> None:
    error = refused(frame)
    assert error.code == code
    assert error.fatal
    assert refused(frame.encode("utf-8", "surrogatepass")).code in (code, "INVALID_STRING")


def test_invalid_utf8_in_a_binary_frame_is_invalid_string() -> None:
    assert refused(b'{"type":"error","messageId":"\xff"}').code == "INVALID_STRING"


def test_bool_is_not_an_integer_anywhere() -> None:
    for key in ("batchIndex", "totalBatches", "baseDeliverySequence", "maxDeliverySequence"):
        assert refused(text(batch(**{key: True}))).code == "WRONG_TYPE"
    assert refused(text(batch(op(schemaVersion=True)))).code == "INVALID_OPERATION"


def test_limits_are_configurable_and_enforced() -> None:
    small = JsonCodec(
        Limits(
            max_frame_bytes=2000,
            max_operations_per_batch=2,
            max_operation_bytes=350,
            max_version_vector_entries=2,
            max_nesting_depth=6,
        )
    )
    assert refused(text(batch(op(), op(), op())), small).code == "TOO_MANY_OPERATIONS"
    assert refused(" " * 2001, small).code == "FRAME_TOO_LARGE"
    assert refused(b" " * 2001, small).code == "FRAME_TOO_LARGE"
    # 700 characters of 3 UTF-8 bytes each: 2100 bytes, although only 700 characters.
    assert refused("€" * 700, small).code == "FRAME_TOO_LARGE"
    big = op(data={"title": "x" * 400})
    assert refused(text(batch(big)), small).code == "OPERATION_TOO_LARGE"
    vector = {"a": 1, "b": 2, "c": 3}
    handshake = {
        "type": "handshake",
        "messageId": "h",
        "nodeId": "n",
        "versionVector": vector,
        "schemaVersion": 1,
    }
    assert refused(text(handshake), small).code == "VERSION_VECTOR_TOO_LARGE"
    deep = op(data={"a": {"b": {"c": {"d": 1}}}})  # the {"d": 1} object is at depth 7
    assert refused(text(batch(deep)), small).code == "NESTING_TOO_DEEP"
    assert isinstance(small.decode(text(batch(op(), op()))), OperationBatch)


def test_default_limits() -> None:
    limits = Limits()
    assert limits.max_frame_bytes == 4 * 1024 * 1024
    assert limits.max_operation_bytes == 256 * 1024
    assert limits.max_operations_per_batch == 1000
    assert limits.max_version_vector_entries == 10_000
    assert limits.max_nesting_depth == 64
    with pytest.raises(ValueError):
        Limits(max_frame_bytes=0)


def test_nesting_at_the_limit_is_accepted() -> None:
    # message (1) > operations (2) > op (3) > data (4) > 60 more levels = 64.
    value: Any = 1
    for _ in range(60):
        value = [value]
    message = CODEC.decode(text(batch(op(data={"deep": value}))))
    assert isinstance(message, OperationBatch)
    value = [value]
    assert refused(text(batch(op(data={"deep": value})))).code == "NESTING_TOO_DEEP"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    message = CODEC.decode(text(batch(op(data={"title": "[" * 500 + '\\"{' * 100}))))
    assert isinstance(message, OperationBatch)


def test_brackets_inside_strings_without_escapes_do_not_hide_or_add_nesting() -> None:
    # Frames without a backslash take the quote-pairing scan; strings with brackets in
    # them must neither count as nesting nor cancel real nesting out.
    assert isinstance(CODEC.decode(text(batch(op(data={"t": "[{" * 300})))), OperationBatch)
    assert isinstance(CODEC.decode(text(batch(op(data={"t": "]}" * 300})))), OperationBatch)
    deep: Any = 1
    for _ in range(61):
        deep = [deep]
    for title in ("", "]" * 100, "}]" * 100, "[" * 100, '"'):
        frame = text(batch(op(data={"t": title, "deep": deep}), op(data={"t": title})))
        assert refused(frame).code == "NESTING_TOO_DEEP", title
    shallow = batch(*(op(data={"t": "a]b", "deep": deep[0]}) for _ in range(10)))
    assert isinstance(CODEC.decode(text(shallow)), OperationBatch)
    assert isinstance(CODEC.decode(text(shallow).encode()), OperationBatch)


def test_surrogate_pairs_are_fine() -> None:
    frame = (
        '{"type":"error","messageId":"\\ud83d\\ude00","code":"C","message":"😀","retriable":false}'
    )
    message = CODEC.decode(frame)
    assert isinstance(message, ErrorMessage)
    assert message.message_id == "😀" == message.message
    # An escaped backslash followed by "ud800" is not an escape.
    message = CODEC.decode(
        '{"type":"error","messageId":"\\\\ud800","code":"C","message":"m","retriable":false}'
    )
    assert message.message_id == "\\ud800"


def test_side_channel_errors_are_not_fatal() -> None:
    error = refused('{"type":"awareness-update","messageId":"a","clientId":"x","states":{}}')
    assert (error.code, error.fatal) == ("WRONG_TYPE", False)
    error = refused('{"type":"blob-chunk-response","messageId":"b","requestId":"r"}')
    assert (error.code, error.fatal) == ("MISSING_FIELD", False)
    error = refused(
        '{"type":"yjs-doc-update","messageId":"y","collection":"c","recordId":"r","field":"f","update":null}'
    )
    assert not error.fatal
    # but not if the frame itself is broken
    assert refused('{"type":"awareness-update","messageId":"a","clientId":1,"states":{},}').fatal


def test_unknown_fields_are_kept_and_re_encoded_after_the_known_ones() -> None:
    frame = '{"type":"acknowledgment","nodeToken":"t","messageId":"k","acknowledgedMessageId":"b","lastSequenceNumber":3,"x":[1,{"y":null}]}'
    message = CODEC.decode(frame)
    assert isinstance(message, Acknowledgment)
    assert message.extra == {"nodeToken": "t", "x": [1, {"y": None}]}
    assert message == Acknowledgment(
        message_id="k", acknowledged_message_id="b", last_sequence_number=3
    )
    assert CODEC.encode(message) == (
        '{"type":"acknowledgment","messageId":"k","acknowledgedMessageId":"b",'
        '"lastSequenceNumber":3,"nodeToken":"t","x":[1,{"y":null}]}'
    )


def test_extra_that_repeats_a_known_field_cannot_be_encoded() -> None:
    message = Acknowledgment(
        message_id="k",
        acknowledged_message_id="b",
        last_sequence_number=0,
        extra={"messageId": "x"},
    )
    with pytest.raises(LocalProtocolError):
        CODEC.encode(message)


def test_null_optional_fields_count_as_absent() -> None:
    message = CODEC.decode(text({**ACK, "deliverySequence": None}))
    assert message == Acknowledgment(
        message_id="k", acknowledged_message_id="b", last_sequence_number=0
    )
    assert message.extra == {}


def test_encode_formats_numbers_like_javascript() -> None:
    message = AwarenessUpdate(
        message_id="a",
        client_id=7.0,
        states={"7": {"x": 5.0, "y": 1e-7, "z": 1e21, "n": -0.0, "big": 2**60, "f": 0.1}},
    )
    assert CODEC.encode(message) == (
        '{"type":"awareness-update","messageId":"a","clientId":7,"states":{"7":'
        '{"x":5,"y":1e-7,"z":1e+21,"n":0,"big":1152921504606847000,"f":0.1}}}'
    )


def test_encode_refuses_what_is_not_a_message() -> None:
    with pytest.raises(LocalProtocolError):
        CODEC.encode("hello")  # type: ignore[arg-type]


ACK_TEXT = (
    '{"type":"acknowledgment","messageId":"%s","acknowledgedMessageId":"%s",'
    '"lastSequenceNumber":%s%s}'
)


@pytest.mark.parametrize(
    ("message_id", "acknowledged", "last", "delivery"),
    [
        ("0190f0a0-0000-7000-8000-000000000001", "b", "1", ',"deliverySequence":6'),
        ("", "x y", "0", ""),
        ("m", "b", "9007199254740991", ',"deliverySequence":9007199254740991'),
        ("m", "b", "9007199254740992", ""),  # beyond 2**53-1
        ("m", "b", "1", ',"deliverySequence":9007199254740992'),
        ("m", "b", "01", ""),  # not a JSON number
        ("m", "b", "-1", ""),
        ("m", "b", "1.0", ""),
        ("m", "b", "1", ',"deliverySequence":null'),
        ("m\\u0041", "b", "1", ""),  # an escape: the full decoder unescapes it
        ("m", "b", "1", ',"deliverySequence":2,"extra":true'),
        ("m", "b", "1", ',"lastSequenceNumber":2'),  # a repeated key
        ("é", "b", "1", ""),
    ],
)
def test_plain_acknowledgments_decode_as_the_full_decoder_does(
    message_id: str, acknowledged: str, last: str, delivery: str
) -> None:
    plain = ACK_TEXT % (message_id, acknowledged, last, delivery)
    spaced = "{ " + plain[1:]  # the same message, never on the short path

    def outcome(frame: str | bytes) -> Any:
        try:
            message = CODEC.decode(frame)
        except RemoteProtocolError as exc:
            return ("refused", exc.code)
        return ("decoded", message, dict(message.extra))

    expected = outcome(spaced)
    for frame in (plain, plain.encode("utf-8")):
        assert outcome(frame) == expected
    if expected[0] == "decoded":
        assert isinstance(expected[1], Acknowledgment)
