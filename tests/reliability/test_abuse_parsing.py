"""Bad-input catalogue rows 15-25 (encoding and parsing) against the real server (B6).

Fatal decode errors get one ``error`` with the codec's own code and a close: 1007 for
``INVALID_JSON``, ``INVALID_STRING`` and ``INVALID_NUMBER``, 1008 for the others
(docs/server.md "Client batches and codes").  The catalogue's generic ``MALFORMED`` is
therefore one of several precise codes here.  A malformed *operation* inside a well-formed
batch is refused alone (``operation-rejected INVALID_OPERATION``) and the batch goes on.
"""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import pytest
import trio
from abuse_harness import WAIT, AbuseEnv, abuse_env, handshake, make_op, raw_client
from trio_websocket import ConnectionClosed

from kora.core.canonical import json_stringify
from kora.core.operations import operation_to_wire
from kora.protocol.limits import Limits
from kora.protocol.messages import OperationBatch
from kora.protocol.wire_format import FrameCodec, WireFormat


async def fatal_frame(env: AbuseEnv, frame: str | bytes, *, after_handshake: bool = True) -> Any:
    """Send ``frame``; the ``error`` and the close code that follow."""
    async with raw_client(env.url) as client:
        if after_handshake:
            await client.connect("parser-victim")
        await client.send(frame)
        return await client.expect_error_and_close()


ACK_PREFIX = '{"type":"acknowledgment","messageId":"m","acknowledgedMessageId":"x",'


@pytest.mark.parametrize(
    ("row", "frame", "code", "close"),
    [
        ("15-garbage-text", "not json at all", "INVALID_JSON", 1007),
        ("15-trailing-data", ACK_PREFIX + '"lastSequenceNumber":0} {}', "INVALID_JSON", 1007),
        ("15-not-an-object", "[1, 2, 3]", "INVALID_JSON", 1007),
        ("16-nested-100k", "[" * 100_000, "NESTING_TOO_DEEP", 1008),
        ("16-nested-objects", '{"a":' * 100_000, "NESTING_TOO_DEEP", 1008),
        (
            "17-5000-digits",
            ACK_PREFIX + '"lastSequenceNumber":' + "9" * 5000 + "}",
            "INVALID_NUMBER",
            1007,
        ),
        ("19-nan", ACK_PREFIX + '"lastSequenceNumber":NaN}', "INVALID_NUMBER", 1007),
        ("19-infinity", ACK_PREFIX + '"lastSequenceNumber":Infinity}', "INVALID_NUMBER", 1007),
        (
            "19-minus-infinity",
            ACK_PREFIX + '"lastSequenceNumber":-Infinity}',
            "INVALID_NUMBER",
            1007,
        ),
        ("20-duplicate-key", '{"type":"acknowledgment","type":"handshake"}', "DUPLICATE_KEY", 1008),
        (
            "21-lone-surrogate",
            ACK_PREFIX.replace('"m"', '"\\ud800"') + '"lastSequenceNumber":0}',
            "INVALID_STRING",
            1007,
        ),
        ("23-unknown-type", '{"type":"nope","messageId":"m"}', "UNKNOWN_MESSAGE_TYPE", 1008),
        ("23-missing-field", '{"type":"acknowledgment","messageId":"m"}', "MISSING_FIELD", 1008),
    ],
    ids=lambda value: value if isinstance(value, str) and value[:2].isdigit() else "",
)
async def test_rows15_to_23_undecodable_frames_close_with_the_codec_code(
    row: str, frame: str, code: str, close: int
) -> None:
    # Rows 16 and 20 close with 1008 where the catalogue says 1007: our server maps only
    # the three "bytes are not valid JSON text" codes to 1007 (invalid payload data) and
    # every structural refusal to 1008 (policy violation), as docs/server.md lists.
    async with abuse_env() as env:
        before = await env.snapshot()
        for after_handshake in (False, True):
            error, close_code = await fatal_frame(env, frame, after_handshake=after_handshake)
            assert error is not None, row
            assert (error["code"], error["retriable"]) == (code, False)
            assert close_code == close
        await env.assert_only_applied(before)
        await env.assert_healthy()


async def test_row16_nesting_inside_operation_data_is_bounded_before_parsing() -> None:
    # Depth counts the whole frame (limit 64): an operation with data nested 10,000 deep
    # never reaches json.loads, so no RecursionError can escape.
    async with abuse_env() as env:
        wire = operation_to_wire(make_op("deep-node", 1))
        text = json_stringify(
            {
                "type": "operation-batch",
                "messageId": "m",
                "operations": [{**wire, "data": {"k": "PLACEHOLDER"}}],
                "isFinal": True,
                "batchIndex": 0,
            }
        ).replace('"PLACEHOLDER"', "[" * 10_000 + "]" * 10_000)
        error, close_code = await fatal_frame(env, text)
        assert error is not None
        assert error["code"] == "NESTING_TOO_DEEP"
        assert close_code == 1008
        assert await env.store.operation_count() == 0
        await env.assert_healthy()


@pytest.mark.parametrize(
    ("row", "change"),
    [
        ("18-seq-2^63", {"sequenceNumber": 2**63}),
        ("18-seq-above-2^53", {"sequenceNumber": 2**53}),
        ("18-wall-2^63", {"timestamp": {"wallTime": 2**63}}),
        ("22-seq-string", {"sequenceNumber": "5"}),
        ("22-seq-true", {"sequenceNumber": True}),
        ("22-wall-float", {"timestamp": {"wallTime": 1.5}}),
        ("22-logical-negative", {"timestamp": {"logical": -1}}),
        ("22-logical-true", {"timestamp": {"logical": True}}),
        ("23-unknown-op-type", {"type": "upsert"}),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_rows18_22_bad_operation_fields_refuse_that_operation_only(
    row: str, change: dict[str, Any]
) -> None:
    async with abuse_env() as env:
        before = await env.snapshot()
        good_before = make_op("typed-node", 1)
        bad = operation_to_wire(make_op("typed-node", 2))
        for key, value in change.items():
            bad[key] = {**bad[key], **value} if isinstance(value, dict) else value
        good_after = make_op("typed-node", 3)
        async with raw_client(env.url) as client:
            await client.connect("typed-node")
            rejections, ack = await client.write([good_before, bad, good_after])
            assert [(r["operationId"], r["code"], r["retriable"]) for r in rejections] == [
                (bad["id"], "INVALID_OPERATION", False)
            ], row
            assert ack["lastSequenceNumber"] == 3
            await client.still_open()
        await env.assert_only_applied(before, [good_before, good_after])
        await env.assert_healthy(rejected=[bad["id"]])


async def test_row23_unknown_extra_fields_are_ignored_for_interop() -> None:
    # The catalogue asks for a strict schema that rejects extra fields.  Ours ignores
    # unknown fields on envelopes and operations (kept open for newer reference peers,
    # which add optional fields); the frame is still checked field by field.
    async with abuse_env() as env:
        op = make_op("extra-node", 1)
        wire = {**operation_to_wire(op), "futureField": {"x": 1}}
        async with raw_client(env.url) as client:
            await client.connect("extra-node")
            await client.send(
                json_stringify(
                    {
                        "type": "operation-batch",
                        "messageId": "m",
                        "operations": [wire],
                        "isFinal": True,
                        "batchIndex": 0,
                        "futureEnvelopeField": True,
                    }
                )
            )
            messages = await client.receive_until("acknowledgment")
            assert [m["type"] for m in messages] == ["acknowledgment"]
            await client.still_open()
        assert await env.store.operation_count() == 1
        await env.assert_healthy()


# ---------------------------------------------------------------- row 24: binary format


def test_row24_protobuf_runs_on_the_upb_backend() -> None:
    from google.protobuf.internal import api_implementation

    assert api_implementation.Type() == "upb"


def binary_batch(node: str) -> bytes:
    codec = FrameCodec(Limits())
    codec.switch_to(WireFormat.KORA_PB1)
    ops = tuple(make_op(node, seq, data={"title": f"t{seq}", "n": seq}) for seq in range(1, 4))
    frame = codec.encode(
        OperationBatch(message_id="m", operations=ops, is_final=True, batch_index=0)
    )
    assert isinstance(frame, bytes)
    return frame


MUTATIONS = {
    "truncated-half": lambda f: f[: len(f) // 2],
    "truncated-last-byte": lambda f: f[:-1],
    "varint-over-10-bytes": lambda f: f[:1] + b"\xff" * 11 + b"\x01",
    "length-past-the-end": lambda f: f[:1] + b"\xfe\xff\xff\xff\x0f" + f[1:8],
    "trailing-garbage": lambda f: f + b"\xff\xff\xff",
    "flipped-bytes": lambda f: bytes(b ^ 0x5A if i % 7 == 3 else b for i, b in enumerate(f)),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
async def test_row24_malformed_binary_frames_close_without_crashing(mutation: str) -> None:
    async with abuse_env() as env:
        before = await env.snapshot()
        valid = binary_batch("pb-node")
        frame = MUTATIONS[mutation](valid)
        assert frame != valid
        codec = FrameCodec(Limits())
        async with raw_client(env.url) as client:
            await client.send(handshake("pb-node", formats=["kora-pb1", "json"]))
            response = await client.receive()
            assert response["selectedWireFormat"] == "kora-pb1"
            codec.switch_to(WireFormat.KORA_PB1)
            await client.send(frame)
            error = None
            with trio.fail_after(WAIT):
                while True:
                    try:
                        message = codec.decode(await client.ws.get_message())
                    except ConnectionClosed as closed:
                        close_code = int(closed.reason.code)
                        break
                    if type(message).__name__ == "ErrorMessage":
                        error = message
        # Every mutation must be refused by the codec (never SYNC_ERROR/1011, which would
        # mean an exception escaped the decoder).  A flipped frame may still decode into
        # operations; then they are checked one by one and refused as invalid.
        if error is None:
            assert mutation == "flipped-bytes"
        else:
            assert error.code not in ("SYNC_ERROR",)
            assert close_code in (1007, 1008)
            await env.assert_only_applied(before)
        await env.assert_healthy()


# ---------------------------------------------------------------- row 25


async def test_row25_no_application_level_decompression_exists() -> None:
    # The only decompression on our server is permessage-deflate (row 8).  There is no
    # application-level compressed blob; a long-poll body sent with Content-Encoding: gzip
    # is not inflated but parsed as it is, and refused as malformed (400).
    async with abuse_env() as env:
        body = gzip.compress(json_stringify([handshake("gz-node")]).encode() * 1000)
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{env.server.http_url}/kora/sync/handshake",
                content=body,
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            )
        assert response.status_code == 400
        assert env.server.session_count == 1
        await env.assert_healthy()
