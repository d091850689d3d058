"""``SerialWorker``: a store's jobs in a worker thread, one at a time, with few scheduling rounds.

``trio.to_thread.run_sync(job, limiter=CapacityLimiter(1))`` does the same, at a cost paid on
every store call (the server's append of each client batch, on the latency path): the
limiter's acquire yields a full scheduling round even when nobody holds it, each job copies
the context and names the worker thread (two ``pthread_setname_np`` calls through ctypes),
and a context manager tracks the thread.  A store needs none of that: its jobs are plain
synchronous functions that read no context variables.  Here an uncontended job starts at
once on trio's thread cache, and its outcome reschedules the waiting task directly.

Cancellation is as with ``to_thread.run_sync`` (not ``abandon_on_cancel``): a job waiting for
its turn can be cancelled, a running job is waited for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import trio

if TYPE_CHECKING:
    from outcome import Outcome

__all__ = ["SerialWorker"]

T = TypeVar("T")


def _not_abortable(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


class SerialWorker:
    """Runs synchronous jobs in a worker thread, one at a time, in the order they ask."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()  # fair: waiting jobs run in arrival order

    def waiting(self) -> int:
        """How many jobs wait for their turn."""
        return self._lock.statistics().tasks_waiting

    async def run(self, job: Callable[[], T]) -> T:
        """``job()`` in a worker thread, after the jobs before it; its result or exception."""
        await trio.lowlevel.checkpoint_if_cancelled()
        lock = self._lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            return await _in_thread(job)
        finally:
            lock.release()


async def _in_thread(job: Callable[[], T]) -> T:
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()

    def deliver(result: Outcome[T]) -> None:  # in the worker thread
        try:
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)
        except trio.RunFinishedError:  # pragma: no cover - the loop ended under the job
            pass

    trio.lowlevel.start_thread_soon(job, deliver)
    # ``reschedule(task, result)`` resumes us with the job's outcome: its value, or it raises.
    value: T = await trio.lowlevel.wait_task_rescheduled(_not_abortable)
    return value
