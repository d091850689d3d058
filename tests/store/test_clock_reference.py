"""The handshake's server time widens what a slow client accepts (spec 3.3), and an
operation refused for now (clock drift) leaves the delivery watermark where it was, so it
is delivered again.  Found by the B1 targeted case of a client clock an hour behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest

from kora.core.hlc import HLCTimestamp
from kora.store import LocalMutation, Store
from tests.store.store_helpers import KINDS, START_MS, ManualClock, open_kind

HOUR_MS = 3_600_000


@pytest.fixture(params=KINDS)
async def pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, Store, ManualClock, ManualClock]]:
    """A writer whose clock is right and a reader whose clock is an hour behind."""
    right, behind = ManualClock(START_MS + HOUR_MS), ManualClock(START_MS)
    async with (
        open_kind(request.param, tmp_path, physical_clock=right) as writer,
        open_kind(request.param, tmp_path, physical_clock=behind) as reader,
    ):
        await reader.write_local(LocalMutation.insert("todos", {"warm": True}))  # ticked
        yield writer, reader, right, behind


async def test_a_slow_client_refuses_an_hour_newer_op_before_any_handshake(
    pair: tuple[Store, Store, ManualClock, ManualClock],
) -> None:
    writer, reader, _, _ = pair
    op = await writer.write_local(LocalMutation.insert("todos", {"n": 1}))
    result = await reader.apply_remote([op], watermark=("", 1))
    assert [(r.code, r.retriable) for r in result.rejected] == [("CLOCK_DRIFT", True)]
    # Refused for now: the watermark stays, so the server sends it again.
    assert await reader.delivery_watermark("") == 0


async def test_the_server_time_of_a_handshake_lets_it_accept(
    pair: tuple[Store, Store, ManualClock, ManualClock],
) -> None:
    writer, reader, right, _ = pair
    op = await writer.write_local(LocalMutation.insert("todos", {"n": 1}))
    assert await reader.rebase_pending(right.now) == 0  # what the handshake calls
    result = await reader.apply_remote([op], watermark=("", 1))
    assert result.rejected == ()
    assert [applied.id for applied in result.applied] == [op.id]
    assert await reader.delivery_watermark("") == 1
    # Still refused: more than 5 min beyond the server's own time.
    far = await writer.write_local(LocalMutation.insert("todos", {"n": 2}))
    beyond = HLCTimestamp(right.now + 10 * 60_000, 0, far.node_id)
    late = await reader.apply_remote([attrs.evolve(far, id="f" * 64, timestamp=beyond)])
    assert [r.code for r in late.rejected] == ["CLOCK_DRIFT"]
