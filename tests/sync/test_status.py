"""The status board: transitions, latest-wins watching, the end of a watch."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from kora.core.errors import ClosedError
from kora.sync.status import StatusBoard, StatusSnapshot, SyncStatus


def test_connected_syncing_synced_offline() -> None:
    seen: list[StatusSnapshot] = []
    board = StatusBoard(on_change=seen.append)
    board.pending(2)
    assert board.snapshot.status is SyncStatus.OFFLINE
    board.connected()
    board.exchange_started()
    assert board.snapshot.status is SyncStatus.SYNCING
    board.streaming(now=5.0)
    assert board.snapshot.status is SyncStatus.SYNCING  # two operations still pending
    board.pending(0)
    assert board.snapshot.status is SyncStatus.SYNCED
    assert board.snapshot.last_synced_at == 5.0
    board.pending(1)
    assert board.snapshot.status is SyncStatus.SYNCING
    board.offline()
    assert board.snapshot.status is SyncStatus.OFFLINE
    assert [s.status for s in seen] == [
        SyncStatus.OFFLINE,  # pending count changed
        SyncStatus.CONNECTED,
        SyncStatus.SYNCING,
        SyncStatus.SYNCING,  # streaming: last_synced_at set
        SyncStatus.SYNCED,
        SyncStatus.SYNCING,
        SyncStatus.OFFLINE,
    ]


def test_error_sticks_until_reset() -> None:
    board = StatusBoard()
    board.failed("schema", auth_failed=False)
    board.offline()
    assert board.snapshot.status is SyncStatus.ERROR
    assert board.snapshot.error == "schema"
    board.reset_error()
    assert board.snapshot.status is SyncStatus.OFFLINE
    assert board.snapshot.error is None


def test_unchanged_snapshots_are_not_published() -> None:
    seen: list[StatusSnapshot] = []
    board = StatusBoard(on_change=seen.append)
    board.offline()
    board.pending(0)
    assert seen == []


async def test_watch_yields_current_then_latest() -> None:
    board = StatusBoard()
    got: list[SyncStatus] = []
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            async with board.watch() as statuses:
                async for snapshot in statuses:
                    got.append(snapshot.status)

        nursery.start_soon(watch)
        await trio.testing.wait_all_tasks_blocked()
        board.connected()
        board.exchange_started()  # two changes before the watcher runs: latest wins
        await trio.testing.wait_all_tasks_blocked()
        board.close()
    assert got == [SyncStatus.OFFLINE, SyncStatus.SYNCING]


async def test_watch_outside_its_block_is_refused() -> None:
    watch = StatusBoard().watch()
    with pytest.raises(ClosedError):
        await watch.__anext__()
