"""Sync-engine bugs found by the reliability batteries, kept as regression tests.

* The acknowledgment timeout compared ``now - watched_since >= ack_timeout`` at a deadline
  computed as ``watched_since + ack_timeout``; float rounding could make that false at the
  deadline (0.7 + 0.1 - 0.7 < 0.1) and the receiver then spun at that instant forever.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from kora.server import MemoryServerStore
from kora.store.memory import open_memory_store
from kora.store.values import LocalMutation
from kora.sync import SyncOptions, open_sync
from kora.testing import (
    ChaosConfig,
    Direction,
    chaos_transport,
    frame_message,
    open_loop_server,
)


class SpinDetector(trio.abc.Instrument):
    """Cancels ``scope`` when tasks keep running while the clock stands still.

    Under ``MockClock(autojump_threshold=0)`` time only moves when every task waits; a
    task that never waits (a busy loop through checkpoints) freezes virtual time forever.
    """

    def __init__(self, scope: trio.CancelScope, limit: int = 50_000) -> None:
        self.scope = scope
        self.limit = limit
        self.steps = 0
        self.at = -1.0
        self.spun = False

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        now = trio.current_time()
        if now != self.at:
            self.at, self.steps = now, 0
            return
        self.steps += 1
        if self.steps > self.limit and not self.spun:
            self.spun = True
            self.scope.cancel()


def batches_vanish(frame: Any, direction: Direction) -> bool:
    return direction is Direction.OUTGOING and frame_message(frame)["type"] == "operation-batch"


async def test_the_ack_timeout_fires_when_its_deadline_is_not_exact(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reasons: list[str] = []

    def emit(name: str, payload: Any) -> None:
        if name == "sync:disconnected":
            reasons.append(str(payload.get("reason")))

    with trio.CancelScope() as guard:
        detector = SpinDetector(guard)
        trio.lowlevel.add_instrument(detector)
        try:
            async with (
                MemoryServerStore() as server_store,
                open_loop_server(server_store) as server,
                open_memory_store() as store,
            ):
                factory = chaos_transport(
                    server.connect, ChaosConfig(drop_predicate=batches_vanish)
                )
                options = SyncOptions(url="memory://", transport=factory, ack_timeout=0.1)
                async with open_sync(store, options, emit=emit) as engine:
                    await engine.connect()
                    await trio.sleep(0.7 - trio.current_time())
                    await store.write_local(LocalMutation.insert("todos", {"title": "lost"}))
                    with trio.fail_after(30):
                        while not any("Timed out" in reason for reason in reasons):
                            await trio.sleep(0.05)
        finally:
            trio.lowlevel.remove_instrument(detector)
    assert not detector.spun, "the receiver spun at its ack deadline without timing out"
