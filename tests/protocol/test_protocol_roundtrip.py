"""Property: every message survives both codecs; the binary one even keeps int vs float."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_strategies import message_strategies, operation_lists

from kora.protocol import MESSAGE_TYPES, BinaryCodec, JsonCodec, Message, OperationBatch

STRATEGIES = message_strategies(json_safe=True)
JSON = JsonCodec()
BINARY = BinaryCodec()


def typed(value: Any) -> Any:
    """A view of ``value`` in which 5 and 5.0, or 0.0 and -0.0, differ."""
    if isinstance(value, dict):
        return ("dict", [(key, typed(member)) for key, member in value.items()])
    if isinstance(value, list | tuple):
        return ("list", [typed(member) for member in value])
    if isinstance(value, float):
        return ("float", value.hex(), math.copysign(1.0, value))
    return (type(value).__name__, value)


def as_data(message: Message) -> Any:
    return typed({"message": attrs.asdict(message), "extra": dict(message.extra)})


@pytest.mark.parametrize("message_type", sorted(MESSAGE_TYPES))
@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_both_codecs_round_trip(message_type: str, data: st.DataObject) -> None:
    message = data.draw(STRATEGIES[message_type])

    frame = JSON.encode(message)
    decoded = JSON.decode(frame)
    assert decoded == message
    assert decoded.extra == message.extra
    assert JSON.encode(decoded) == frame
    assert JSON.decode(frame.encode("utf-8")) == message  # JSON in a binary frame

    binary = BINARY.encode(message)
    exact = BINARY.decode(binary)
    assert as_data(exact) == as_data(message)  # types, signs and key order too
    assert exact == message
    assert BINARY.encode(exact) == binary


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=operation_lists(json_safe=False))
def test_binary_keeps_numbers_json_cannot(operations: tuple[Any, ...]) -> None:
    # Integers beyond int64 and 2**53, doubles beyond 2**53: exact in kora-pb1.
    batch = OperationBatch(message_id="m", operations=operations, is_final=True, batch_index=0)
    assert as_data(BINARY.decode(BINARY.encode(batch))) == as_data(batch)
