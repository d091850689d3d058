"""SyncOptions validation, the transport choice, and the long-polling body framing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kora
from kora.sync.engine import transport_factory
from kora.sync.long_polling import decode_varint_frames, encode_varint_frames
from kora.sync.options import DEFAULT_WINDOW


def test_defaults_are_the_documented_ones() -> None:
    options = kora.SyncOptions(url="ws://127.0.0.1:8787/")
    assert (options.batch_size, options.schema_version, options.window) == (100, 1, DEFAULT_WINDOW)
    assert (options.reconnect_interval, options.max_reconnect_interval) == (1.0, 30.0)
    assert (options.ack_timeout, options.connect_timeout) == (30.0, 10.0)
    assert options.auto_reconnect
    assert (options.transport, options.wire_format) == ("websocket", "auto")


@pytest.mark.parametrize(
    "bad",
    [
        {"url": ""},
        {"batch_size": 0},
        {"window": True},
        {"reconnect_interval": 0},
        {"max_reconnect_interval": float("inf")},
        {"transport": "carrier-pigeon"},
        {"wire_format": "protobuf"},
        {"reconnect_jitter": 2.0},
    ],
)
def test_invalid_options_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        kora.SyncOptions(**{"url": "ws://127.0.0.1:1/", **bad})


def test_transport_choice_converts_the_url_scheme() -> None:
    websocket = transport_factory(kora.SyncOptions(url="http://127.0.0.1:1"))
    assert websocket.args == ("ws://127.0.0.1:1",)  # type: ignore[attr-defined]
    polling = transport_factory(kora.SyncOptions(url="wss://h:1/", transport="long-polling"))
    assert polling.args == ("https://h:1/",)  # type: ignore[attr-defined]


@given(st.lists(st.binary(max_size=300), max_size=10))
def test_varint_framing_round_trips(frames: list[bytes]) -> None:
    assert decode_varint_frames(encode_varint_frames(frames)) == frames


@pytest.mark.parametrize("body", [b"\x05abc", b"\x80", b"\xff" * 11])
def test_truncated_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_varint_frames(body)
