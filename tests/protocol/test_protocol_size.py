"""The binary format's size target: at most 35% of the JSON frame for a realistic batch."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from kora.protocol import BinaryCodec, JsonCodec

BENCH = Path(__file__).resolve().parents[2] / "bench" / "protocol_bench.py"


def load_bench() -> ModuleType:
    # bench/ is not an installed package: load the scenario builder from its file.
    spec = importlib.util.spec_from_file_location("protocol_bench", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_batch_of_100_todo_operations_is_at_most_35_percent_of_json() -> None:
    bench = load_bench()
    batch = bench.todo_batch(100)
    assert len(batch.operations) == 100
    assert {op.type for op in batch.operations} == {"insert", "update"}
    json_bytes, binary_bytes = bench.frame_sizes(batch)
    print(
        f"JSON {json_bytes} bytes, kora-pb1 {binary_bytes} bytes, {binary_bytes / json_bytes:.3f}"
    )
    assert binary_bytes <= 0.35 * json_bytes
    # The comparison is between equivalent frames.
    assert BinaryCodec().decode(BinaryCodec().encode(batch)) == batch
    assert JsonCodec().decode(JsonCodec().encode(batch)) == batch
