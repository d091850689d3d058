"""Wire-format benchmark: the JSON codec beside our binary kora-pb1 codec.

Run: ``.venv/bin/python -m bench.protocol_bench`` (a few seconds).

Scenario ``todo_batch_100``: one ``operation-batch`` of 100 todo operations (70 inserts and 30
updates) by one node, with UUIDv7 node, record and user ids, content ids and causal
dependencies as a real client makes them (each op depends on the previous one of its
collection).  For each codec it measures:

* ``frame_bytes``: the size of the encoded frame (deterministic);
* ``encode_decode_us``: encode the batch, then decode the frame back into ``Operation``
  values, median of several rounds, in microseconds.

Prints one JSON object per line ``{"scenario","system","metric","value","unit"}``, then a
small table and the ratios binary / JSON.  Sizes are asserted in tests (the binary frame must
be at most 35% of the JSON one); times are only measured here.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from kora.core.hlc import HLCTimestamp
from kora.core.operation import Operation
from kora.core.operations import create_operation
from kora.protocol import BinaryCodec, JsonCodec, Message, OperationBatch

ROUNDS = int(os.environ.get("KORA_BENCH_ROUNDS", "15"))
LOOPS = int(os.environ.get("KORA_BENCH_LOOPS", "20"))
SCENARIO = "todo_batch_100"
BASE_WALL_TIME = 1_795_768_501_219

results: list[dict[str, Any]] = []


def emit(system: str, metric: str, value: float, unit: str) -> None:
    row = {"scenario": SCENARIO, "system": system, "metric": metric, "value": round(value, 3),
           "unit": unit}  # fmt: skip
    results.append(row)
    print(json.dumps(row), flush=True)


def _uuid7(rng: random.Random, ms: int) -> str:
    """A UUIDv7 (RFC 9562 layout) from a seeded generator, so the scenario is reproducible."""
    value = (ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62)
    value |= rng.getrandbits(62)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def todo_batch(count: int = 100, *, seed: int = 7) -> OperationBatch:
    """``count`` todo operations: inserts first, then updates of some of them (70/30)."""
    rng = random.Random(seed)
    node = _uuid7(rng, BASE_WALL_TIME - 86_400_000)
    user = _uuid7(rng, BASE_WALL_TIME - 172_800_000)
    inserts = count * 7 // 10
    operations: list[Operation] = []
    records: list[tuple[str, dict[str, Any]]] = []
    wall = BASE_WALL_TIME
    for index in range(count):
        wall += rng.randint(1, 40)
        deps = (operations[-1].id,) if operations else ()
        timestamp = HLCTimestamp(wall, 0, node)
        if index < inserts:
            record = _uuid7(rng, wall)
            data: dict[str, Any] = {
                "title": f"Todo {index + 1}: {rng.choice(['buy milk', 'call Ana', 'fix bike', 'read'])}",
                "done": False,
                "priority": rng.randint(0, 3),
                "userId": user,
            }
            records.append((record, dict(data)))
            op = create_operation(
                node_id=node, type="insert", collection="todos", record_id=record, data=data,
                previous_data=None, timestamp=timestamp, sequence_number=index + 1,
                causal_deps=deps,
            )  # fmt: skip
        else:
            record, current = records[rng.randrange(len(records))]
            if rng.random() < 0.6:
                change = {"done": not current["done"]}
            else:
                change = {"title": current["title"] + " (edited)"}
            previous = {key: current[key] for key in change}
            current.update(change)
            op = create_operation(
                node_id=node, type="update", collection="todos", record_id=record, data=change,
                previous_data=previous, timestamp=timestamp, sequence_number=index + 1,
                causal_deps=deps,
            )  # fmt: skip
        operations.append(op)
    return OperationBatch(
        message_id=_uuid7(rng, wall), operations=tuple(operations), is_final=True, batch_index=0
    )


def frame_sizes(batch: OperationBatch) -> tuple[int, int]:
    """(JSON bytes, binary bytes) of one batch."""
    return len(JsonCodec().encode(batch).encode("utf-8")), len(BinaryCodec().encode(batch))


def _median_us(round_trip: Callable[[], Message]) -> float:
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(LOOPS):
            round_trip()
        samples.append((time.perf_counter() - start) / LOOPS * 1e6)
    return statistics.median(samples)


def main() -> None:
    batch = todo_batch()
    json_codec, binary_codec = JsonCodec(), BinaryCodec()
    assert json_codec.decode(json_codec.encode(batch)) == batch
    assert binary_codec.decode(binary_codec.encode(batch)) == batch
    json_bytes, binary_bytes = frame_sizes(batch)
    emit("json", "frame_bytes", json_bytes, "bytes")
    emit("kora-pb1", "frame_bytes", binary_bytes, "bytes")
    json_us = _median_us(lambda: json_codec.decode(json_codec.encode(batch)))
    binary_us = _median_us(lambda: binary_codec.decode(binary_codec.encode(batch)))
    emit("json", "encode_decode_us", json_us, "us")
    emit("kora-pb1", "encode_decode_us", binary_us, "us")

    print()
    print(f"{'scenario':<16} {'metric':<18} {'json':>10} {'kora-pb1':>10} {'ratio':>7}")
    for metric, left, right in (
        ("frame_bytes", json_bytes, binary_bytes),
        ("encode_decode_us", json_us, binary_us),
    ):
        print(f"{SCENARIO:<16} {metric:<18} {left:>10.1f} {right:>10.1f} {right / left:>7.3f}")
    print(f"\nbinary/JSON size ratio: {binary_bytes / json_bytes:.3f}")
    print(f"binary/JSON encode+decode time ratio: {binary_us / json_us:.3f}")


if __name__ == "__main__":
    main()
