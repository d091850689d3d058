"""Decoder fuzzing (reliability.md B7): hostile frames only ever raise RemoteProtocolError.

Each codec gets 10,000+ frames: random bytes and mutations of valid frames (bit flips,
truncation, splices, deep nesting, huge numbers, duplicate keys, wrong types).  The seed is
printed; rerun with ``KORA_FUZZ_SEED=<seed>``.  A second test counts the work decoding does
(profiler events, not wall time) and checks that it grows linearly with the input.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from protocol_helpers import make_op

from kora.protocol import (
    Acknowledgment,
    AwarenessUpdate,
    BinaryCodec,
    BlobChunkPush,
    BlobChunkRequest,
    BlobChunkResponse,
    ErrorMessage,
    Handshake,
    HandshakeResponse,
    JsonCodec,
    Limits,
    Message,
    OperationBatch,
    OperationRejected,
    RemoteProtocolError,
    YjsDocUpdate,
)

FRAMES_PER_CODEC = 10_000
# Small limits make the limit checks part of what is fuzzed.
LIMITS = Limits(max_frame_bytes=64 * 1024, max_operations_per_batch=50, max_operation_bytes=4096)
JSON = JsonCodec(LIMITS)
BINARY = BinaryCodec(LIMITS)


def seed() -> int:
    value = int(os.environ.get("KORA_FUZZ_SEED", random.SystemRandom().randrange(2**32)))
    print(f"fuzz seed: {value} (rerun with KORA_FUZZ_SEED={value})")
    return value


def corpus(vectors_dir: Path) -> list[Message]:
    codec = JsonCodec()
    text = (vectors_dir / "captured_conversations.jsonl").read_text(encoding="utf-8")
    messages = [codec.decode(json.loads(line)["frame"]) for line in text.splitlines()]
    ops = tuple(make_op(seq) for seq in range(1, 6))
    messages += [
        Handshake(
            message_id="h", node_id="n", version_vector={"a": 1}, schema_version=1,
            sync_scope={"todos": {"u": "a"}}, sync_queries=({"collection": "t", "where": {}},),
            extra={"x": [1, {"y": None}]},
        ),
        HandshakeResponse(
            message_id="r", node_id="s", version_vector={}, schema_version=1, accepted=True,
            accepted_scope={"todos": {"u": 1.5}}, blob_storage_enabled=True,
        ),
        OperationBatch(
            message_id="b", operations=ops, is_final=True, batch_index=0,
            base_delivery_sequence=0, max_delivery_sequence=9,
        ),
        Acknowledgment(message_id="k", acknowledged_message_id="b", last_sequence_number=3),
        ErrorMessage(message_id="e", code="C", message="m", retriable=True),
        OperationRejected(
            message_id="x", operation_id=ops[0].id, collection="c", record_id="r", code="C",
            message="m", retriable=False,
        ),
        AwarenessUpdate(message_id="a", client_id=3, states={"3": {"user": {"name": "x"}}, "4": None}),
        YjsDocUpdate(message_id="y", collection="c", record_id="r", field="f", update="AAEC"),
        BlobChunkRequest(message_id="q", request_id="r", hash="ab" * 32),
        BlobChunkResponse(message_id="p", request_id="r", bytes=None),
        BlobChunkPush(message_id="u", hash="h", bytes="AA=="),
    ]  # fmt: skip
    return messages


def json_mutations(rng: random.Random, valid: list[str]) -> Callable[[], str | bytes]:
    tokens = ['"', "{", "}", "[", "]", ",", ":", "\\", "\\u", "\\ud800", "NaN", "-Infinity",
              "1e999", "9" * 5000, "true", "null", "-0", "1.5", '"type"', '"operation-batch"']  # fmt: skip

    def one() -> str | bytes:
        base = rng.choice(valid)
        kind = rng.randrange(10)
        if kind == 0:
            return bytes(rng.getrandbits(8) for _ in range(rng.randrange(64)))
        if kind == 1:  # bit flips in the UTF-8 bytes
            data = bytearray(base.encode())
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            return bytes(data)
        if kind == 2:
            return base[: rng.randrange(len(base))]
        if kind == 3:  # splice two frames
            other = rng.choice(valid)
            return base[: rng.randrange(len(base))] + other[rng.randrange(len(other)) :]
        if kind == 4:  # insert a token somewhere
            at = rng.randrange(len(base))
            return base[:at] + rng.choice(tokens) + base[at:]
        if kind == 5:  # deep nesting in place of a value
            depth = rng.choice([10, 63, 64, 65, 200, 5000])
            return base.replace(":0", ":" + "[" * depth + "0" + "]" * depth, 1)
        if kind == 6:  # huge or odd numbers
            return base.replace(
                ":1", ":" + rng.choice(["1e400", "9" * 400, "-0.0", "1.0", "1e-400", "true"]), 1
            )
        if kind == 7:  # duplicate keys
            return base.replace('"messageId":', '"messageId":"dup","messageId":', 1)
        if kind == 8:  # wrong types
            value = rng.choice(['"5"', "true", "null", "[]", "{}", "1.5", "-1", "9007199254740993"])
            return base.replace(":", ":" + value + ',"_":', rng.randint(1, 3))
        return base.replace(rng.choice(['"', ",", ":", "}"]), "", 1)

    return one


def binary_mutations(rng: random.Random, valid: list[bytes]) -> Callable[[], bytes]:
    def one() -> bytes:
        base = rng.choice(valid)
        kind = rng.randrange(7)
        if kind == 0:
            return bytes(rng.getrandbits(8) for _ in range(rng.randrange(64)))
        data = bytearray(base)
        if kind == 1:
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            return bytes(data)
        if kind == 2:
            return bytes(data[: rng.randrange(len(data))])
        if kind == 3:
            other = rng.choice(valid)
            return bytes(data[: rng.randrange(len(data))]) + other[rng.randrange(len(other)) :]
        if kind == 4:  # overwrite a byte with a varint-continuation or a big value
            data[rng.randrange(len(data))] = rng.choice([0x80, 0xFF, 0x00, 0x7F, 0x01])
            return bytes(data)
        if kind == 5:  # duplicate a slice (repeated fields, last-one-wins)
            at, length = rng.randrange(len(data)), rng.randint(1, 16)
            return bytes(data[:at] + data[at : at + length] + data[at:])
        return bytes(data) + bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 12)))

    return one


def run(decode: Callable[[Any], Any], make: Callable[[], Any], count: int) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    for _ in range(count):
        frame = make()
        try:
            decode(frame)
        except RemoteProtocolError as exc:
            outcomes[exc.code] = outcomes.get(exc.code, 0) + 1
        else:
            outcomes["ok"] = outcomes.get("ok", 0) + 1
    return outcomes


def test_json_decoder_fuzz(vectors_dir: Path) -> None:
    rng = random.Random(seed())
    valid = [JsonCodec().encode(m) for m in corpus(vectors_dir)]
    outcomes = run(JSON.decode, json_mutations(rng, valid), FRAMES_PER_CODEC)
    print(outcomes)
    assert sum(outcomes.values()) == FRAMES_PER_CODEC
    # The mutations reach many different checks, and some frames survive them.
    assert len(outcomes) >= 6
    assert outcomes.get("ok", 0) > 0


def test_binary_decoder_fuzz(vectors_dir: Path) -> None:
    rng = random.Random(seed())
    valid = [BinaryCodec().encode(m) for m in corpus(vectors_dir)]
    outcomes = run(BINARY.decode, binary_mutations(rng, valid), FRAMES_PER_CODEC)
    print(outcomes)
    assert sum(outcomes.values()) == FRAMES_PER_CODEC
    assert {"ok", "BINARY_DECODE_ERROR", "UNKNOWN_MESSAGE_TYPE"} <= outcomes.keys()


# ---------------------------------------------------------------- work grows linearly


def work(decode: Callable[[Any], Any], frame: Any) -> int:
    """Profiler events (Python and C calls) while decoding: a count of work, not time."""
    events = 0

    def count(*_: Any) -> None:
        nonlocal events
        events += 1

    sys.setprofile(count)
    try:
        decode(frame)
    except RemoteProtocolError:
        pass
    finally:
        sys.setprofile(None)
    return events


def batch(size: int) -> OperationBatch:
    return OperationBatch(
        message_id="b", operations=tuple(make_op(seq) for seq in range(1, size + 1)),
        is_final=True, batch_index=0,
    )  # fmt: skip


SHAPES: dict[str, Callable[[int], Any]] = {
    "json batch": lambda n: JsonCodec().encode(batch(n)),
    "binary batch": lambda n: BinaryCodec().encode(batch(n)),
    "json escapes": lambda n: JsonCodec().encode(
        ErrorMessage(message_id="e", code="C", message='\\"[{' * n, retriable=False)
    ),
    "json deep": lambda n: "[" * n + "]" * n,
    "json wide": lambda n: (
        '{"type":"awareness-update","messageId":"a","clientId":1,"states":{'
        + ",".join(f'"{i}":{{"a":[[{i}]]}}' for i in range(n))
        + "}}"
    ),
    "json nesting zigzag": lambda n: "[" + "[]," * n + "[]]",
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_decoding_work_grows_linearly(shape: str) -> None:
    make = SHAPES[shape]
    codec = BinaryCodec() if shape.startswith("binary") else JsonCodec()
    small, large = (work(codec.decode, make(n)) for n in (200, 400))
    # Doubling the input may at most double the work, plus a constant.
    assert large <= 2.2 * small + 200, (small, large)
