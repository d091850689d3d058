"""``SerialWorker`` (the SQLite server store's jobs) and the hub's ``skip``: one job at a
time in arrival order, outcomes as ``to_thread.run_sync`` gives them."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from kora.server.hub import Hub
from kora.server.stores._worker import SerialWorker


async def test_jobs_run_in_a_thread_one_at_a_time_in_arrival_order() -> None:
    worker = SerialWorker()
    order: list[int] = []
    running = 0
    overlap = False
    gate = threading.Event()

    def job(index: int) -> int:
        nonlocal running, overlap
        running += 1
        overlap = overlap or running > 1
        if index == 0:
            gate.wait(5)
        order.append(index)
        running -= 1
        assert threading.current_thread() is not threading.main_thread()
        return index * 10

    results: dict[int, int] = {}

    async def submit(index: int) -> None:
        results[index] = await worker.run(lambda: job(index))

    async with trio.open_nursery() as nursery:
        for index in range(4):
            nursery.start_soon(submit, index)
            await trio.testing.wait_all_tasks_blocked()
        assert worker.waiting() == 3
        gate.set()
    assert order == [0, 1, 2, 3]
    assert results == {0: 0, 1: 10, 2: 20, 3: 30}
    assert not overlap
    assert worker.waiting() == 0


async def test_a_failing_job_raises_in_the_caller_and_frees_the_worker() -> None:
    worker = SerialWorker()

    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await worker.run(fail)
    assert await worker.run(lambda: 7) == 7


async def test_a_waiting_job_can_be_cancelled_a_running_one_is_waited_for() -> None:
    worker = SerialWorker()
    gate = threading.Event()
    finished: list[str] = []

    def slow() -> str:
        gate.wait(5)
        finished.append("slow")
        return "slow"

    async with trio.open_nursery() as nursery:
        running = trio.CancelScope()
        waiting = trio.CancelScope()

        async def run_in(scope: trio.CancelScope, job: object) -> None:
            with scope:
                await worker.run(job)  # type: ignore[arg-type]

        nursery.start_soon(run_in, running, slow)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(run_in, waiting, lambda: finished.append("never"))
        await trio.testing.wait_all_tasks_blocked()
        waiting.cancel()
        running.cancel()  # the job has started: its caller waits for it to finish
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert finished == ["slow"]
    assert await worker.run(lambda: "free") == "free"


def test_publish_skips_the_publishing_subscription() -> None:
    hub = Hub()
    with hub.subscribe() as mine, hub.subscribe() as other:
        assert hub.publish(1, skip=mine) == 1
        assert mine.pending() == 0
        assert other.pending() == 1
        assert hub.publish(2) == 2
        assert mine.pending() == 1
