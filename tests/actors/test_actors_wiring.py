"""Mailboxes and wiring by clone: channels survive restarts."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from actors_helpers import Boom

from actors import ChildSpec, Mailbox, Supervisor, Wiring


class Consumer:
    """Records what each run receives; crashes on "boom"; closes its clone when done."""

    def __init__(
        self, wiring: Wiring, inbox: trio.MemoryReceiveChannel[str], seen: list[tuple[int, str]]
    ) -> None:
        self._generation = wiring.generation
        self._inbox = inbox
        self._seen = seen

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        with self._inbox:  # closing this run's clone must not close the mailbox
            async for message in self._inbox:
                self._seen.append((self._generation, message))
                if message == "boom":
                    raise Boom(message)


async def test_a_message_sent_after_a_restart_reaches_the_new_run(autojump_clock: object) -> None:
    seen: list[tuple[int, str]] = []
    with Mailbox[str](4) as jobs:
        supervisor = Supervisor(
            [ChildSpec(id="c", start=lambda w: Consumer(w, w.receiver(jobs), seen))],
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            with jobs.sender() as send:
                await send.send("one")
                await send.send("boom")
                await trio.testing.wait_all_tasks_blocked()
                assert supervisor.children()[0].generation == 1
                # The sender never saw the crash: the mailbox kept the receive side open.
                await send.send("after restart")
                await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert seen == [(0, "one"), (0, "boom"), (1, "after restart")]


async def test_buffered_messages_wait_for_the_restarted_run(autojump_clock: object) -> None:
    seen: list[tuple[int, str]] = []
    with Mailbox[str](4) as jobs:
        supervisor = Supervisor(
            [ChildSpec(id="c", start=lambda w: Consumer(w, w.receiver(jobs), seen))],
        )
        async with trio.open_nursery() as nursery:
            with jobs.sender() as send:
                for message in ("boom", "kept 1", "kept 2"):
                    send.send_nowait(message)  # queued before the child even starts
            await nursery.start(supervisor.run)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert seen == [(0, "boom"), (1, "kept 1"), (1, "kept 2")]


async def test_a_crashing_producer_does_not_end_the_consumers_channel(
    autojump_clock: object,
) -> None:
    seen: list[tuple[int, str]] = []

    class Producer:
        def __init__(self, wiring: Wiring, outbox: trio.MemorySendChannel[str]) -> None:
            self._generation = wiring.generation
            self._outbox = outbox

        async def run(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            task_status.started()
            await self._outbox.send(f"from run {self._generation}")
            if self._generation == 0:
                raise Boom("producer")  # its clone is closed when the run ends
            await trio.sleep_forever()

    with Mailbox[str](0) as pipe:
        supervisor = Supervisor(
            [
                ChildSpec(id="consumer", start=lambda w: Consumer(w, w.receiver(pipe), seen)),
                ChildSpec(id="producer", start=lambda w: Producer(w, w.sender(pipe))),
            ]
        )
        with trio.move_on_after(1):
            await supervisor.run()
    # The consumer's `async for` did not end when the first producer run closed its clone.
    assert seen == [(0, "from run 0"), (0, "from run 1")]


async def test_the_wiring_closes_the_clones_of_a_run_that_forgets_to(
    autojump_clock: object,
) -> None:
    class Forgetful:
        def __init__(self, receive: trio.MemoryReceiveChannel[int]) -> None:
            self._receive = receive

        async def run(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            task_status.started()
            await trio.sleep(1)
            raise Boom("forgot to close")

    with Mailbox[int](1) as box:
        supervisor = Supervisor(
            [ChildSpec(id="f", start=lambda w: Forgetful(w.receiver(box)))], intensity=5
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            assert box.statistics().open_receive_channels == 2  # the original and one run's
            await trio.sleep(3.5)  # three crashes and restarts later
            assert box.statistics().open_receive_channels == 2
            nursery.cancel_scope.cancel()
        assert box.statistics().open_receive_channels == 1


async def test_closing_the_mailbox_ends_the_channel_once_the_clones_close() -> None:
    box = Mailbox[int](2)
    assert box.capacity == 2
    send, receive = box.sender(), box.receiver()
    box.close()
    with pytest.raises(trio.ClosedResourceError):
        box.sender()
    with pytest.raises(trio.ClosedResourceError):
        box.receiver()
    await send.send(7)
    send.close()
    assert [item async for item in receive] == [7]


@pytest.mark.parametrize("capacity", [-1, math.inf, 1.5, True, "3"])
def test_a_mailbox_is_bounded(capacity: object) -> None:
    with pytest.raises(ValueError, match="capacity"):
        Mailbox[int](capacity)  # type: ignore[arg-type]


def test_a_wiring_made_by_hand_closes_what_it_handed_out() -> None:
    box = Mailbox[int](0)
    with Wiring("by-hand") as wiring:
        assert (wiring.child_id, wiring.generation) == ("by-hand", 0)
        wiring.sender(box)
        wiring.receiver(box)
        assert box.statistics().open_send_channels == 2
    assert box.statistics().open_send_channels == 1
    assert box.statistics().open_receive_channels == 1
    wiring.close()  # idempotent
