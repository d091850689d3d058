"""The Supervisor: OTP supervision on one trio nursery.

Theory of operation
-------------------

A supervisor owns one nursery.  Every run of every child is one task in it, started with
``nursery.start`` so that starts happen one at a time, in spec order.  The rules:

1. **One run scope per run.**  The child's task runs inside a ``CancelScope`` of its own (see
   ``_shutdown.py``).  Until the child calls ``task_status.started()`` the scope is not
   shielded, so cancelling the supervisor while a child starts cancels that child.  From
   ``started()`` on it is shielded: nothing but this supervisor stops a running child, one
   child at a time, so children stop in reverse start order whoever cancelled the tree.
   A ``started()`` that trio refuses (the ``nursery.start`` is already cancelled, so trio
   leaves the task where it is) starts nothing: the scope stays unshielded and the
   cancellation reaches the child at its next checkpoint, as if it had come earlier.
2. **A run never raises into the nursery after started().**  Its task records the outcome
   (returned, raised, or stopped), emits the event and wakes the supervisor's loop.  Before
   ``started()`` it re-raises, so ``nursery.start`` raises in the supervisor: a failed start.
3. **Only the supervisor's own task changes which children run.**  Its loop handles ended
   runs in the order they ended (restart type, then intensity, then strategy) and
   ``terminate_child`` requests.  A run counts while it is ``child.run``; the end of a run
   that a group restart already stopped is ignored.  ``trio.Cancelled`` never reaches this
   bookkeeping as a crash: a child's own run scope absorbs the cancellation the supervisor
   sent it (a *stop*), and any other cancellation is the supervisor's own and propagates.
4. **The orderly stop always runs.**  On give-up, on a failed start, on cancellation or on a
   bug, a ``finally`` stops the children in reverse order, each with its shutdown grace.
   That stop runs in ``shutdown_grace()``, so a parent bounds it by the shutdown it gives this
   supervisor; if that grace runs out, the remaining children are stopped with zero grace.
5. **Errors leave run() bare.**  ``ChildStartFailed`` and ``SupervisorGaveUp`` are raised after
   the nursery has closed, so callers catch them with a plain ``except``, not ``except*``.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable
from typing import final

import attrs
import trio

from actors._errors import ChildStartFailed, SupervisorGaveUp
from actors._events import (
    ChildCrashed,
    ChildExited,
    ChildRestarted,
    ChildStarted,
    ChildStopped,
    EventSink,
    GaveUp,
    LifecycleEvent,
)
from actors._mailbox import Wiring
from actors._shutdown import StopControl, shutdown_grace
from actors._spec import (
    WORKER_SHUTDOWN,
    Actor,
    ChildSpec,
    Restart,
    Shutdown,
    Startable,
    Strategy,
)


class ChildState(enum.Enum):
    """Where a child is in its life, as :meth:`Supervisor.children` reports it."""

    PENDING = "pending"
    """Not running: not started yet, or stopped by a group restart and about to start again."""
    STARTING = "starting"
    """Its run is between ``nursery.start`` and ``task_status.started()``."""
    RUNNING = "running"
    """Started and not asked to stop."""
    STOPPING = "stopping"
    """Asked to stop; its grace blocks may still be running."""
    TERMINATED = "terminated"
    """Ended for good: not restarted (transient after a normal return, temporary, terminated)."""


@final
@attrs.frozen(kw_only=True)
class ChildInfo:
    """A snapshot of one child, from :meth:`Supervisor.children`."""

    id: str
    state: ChildState
    generation: int
    restart: Restart


@final
@attrs.frozen(kw_only=True)
class SupervisorStatistics:
    """A snapshot of a supervisor's counters, from :meth:`Supervisor.statistics`.

    Attributes:
        restarts: Restarts performed in the current (or last) run of the supervisor; a group
            restart counts once, as in OTP's intensity.
        dropped_events: Lifecycle events dropped because the event channel was full or closed,
            since the supervisor was created.
    """

    restarts: int
    dropped_events: int


class _Child:
    __slots__ = ("generation", "index", "run", "spec", "state")

    def __init__(self, spec: ChildSpec, index: int) -> None:
        self.spec = spec
        self.index = index
        self.state = ChildState.PENDING
        self.generation = 0
        self.run: _Run | None = None


class _Run:
    """One run of one child, from ``nursery.start`` to the end of its task."""

    __slots__ = (
        "child",
        "done",
        "end_seq",
        "ended",
        "exception",
        "generation",
        "shutdown",
        "start_cancelled",
        "started",
        "stop",
        "task",
        "wiring",
    )

    def __init__(self, child: _Child) -> None:
        self.child = child
        self.generation = child.generation
        self.wiring = Wiring(child.spec.id, child.generation)
        self.stop = StopControl()
        self.shutdown: float | None = WORKER_SHUTDOWN
        self.started = False
        self.start_cancelled = False
        self.task: trio.lowlevel.Task | None = None
        self.ended = False
        self.exception: Exception | None = None
        self.end_seq = 0
        self.done = trio.Event()


@final
class _StartHook:
    """The ``task_status`` a child sees: tells the supervisor, then forwards to trio's."""

    __slots__ = ("_inner", "_on_started")

    def __init__(self, inner: trio.TaskStatus[None], on_started: Callable[[], None]) -> None:
        self._inner = inner
        self._on_started = on_started

    def started(self, value: None = None) -> None:
        # trio's first: it raises on a second call, and it may refuse to move the task.
        self._inner.started()
        self._on_started()


@final
class _Terminate:
    __slots__ = ("child", "done")

    def __init__(self, child: _Child) -> None:
        self.child = child
        self.done = trio.Event()


@attrs.frozen
class _StartFailure:
    child_id: str
    exception: Exception


@attrs.frozen
class _GiveUp:
    child_id: str
    exception: Exception | None
    time: float


def _restarts_after(restart: Restart, *, crashed: bool) -> bool:
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return crashed
    return False


@final
class Supervisor:
    """Start children in order, restart them by OTP's rules, stop them in reverse order.

    A supervisor is itself an actor (``run(*, task_status)``), so it can be the child of
    another supervisor; when it gives up, its parent sees a crash of that child.

    Args:
        children: The child specs, in start order; ids must be unique.
        strategy: Which children restart when one must (:class:`Strategy`).
        intensity: How many restarts are tolerated within ``period``; one more and the
            supervisor gives up (OTP's defaults: 1 in 5 s).  ``0`` gives up on the first.
        period: The sliding window, in seconds of ``trio.current_time()``.
        events: Where to send :class:`~actors.LifecycleEvent` values (optional).  Sent with
            ``send_nowait``: when the channel is full the event is dropped and counted, so an
            observer never delays the supervisor.  The caller keeps ownership of the channel.
        name: Names this supervisor in events and errors.

    Raises:
        ValueError: Duplicate child ids, ``intensity < 0`` or ``period <= 0``.
    """

    def __init__(
        self,
        children: Iterable[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = 1,
        period: float = 5.0,
        events: trio.MemorySendChannel[LifecycleEvent] | None = None,
        name: str = "supervisor",
    ) -> None:
        specs = tuple(children)
        ids = [spec.id for spec in specs]
        duplicates = sorted({child_id for child_id in ids if ids.count(child_id) > 1})
        if duplicates:
            raise ValueError(f"duplicate child ids: {duplicates}")
        if not isinstance(strategy, Strategy):
            raise ValueError(f"strategy must be a Strategy, not {strategy!r}")
        if isinstance(intensity, bool) or not isinstance(intensity, int) or intensity < 0:
            raise ValueError(f"intensity is an integer >= 0, not {intensity!r}")
        if not period > 0:
            raise ValueError(f"period is seconds > 0, not {period!r}")
        self._specs = specs
        self._strategy = strategy
        self._intensity = intensity
        self._period = period
        self._name = name
        self._sink = EventSink(events)
        self._running = False
        self._nursery: trio.Nursery | None = None
        self._reset()

    def _reset(self) -> None:
        self._children = [_Child(spec, index) for index, spec in enumerate(self._specs)]
        self._by_id = {child.spec.id: child for child in self._children}
        self._restart_times: deque[float] = deque()
        self._restarts = 0
        self._end_seq = 0
        self._wakeup = trio.Event()
        self._commands: deque[_Terminate] = deque()

    @property
    def name(self) -> str:
        """The name used in events and errors."""
        return self._name

    def children(self) -> tuple[ChildInfo, ...]:
        """Return a snapshot of every child, in spec order."""
        return tuple(
            ChildInfo(
                id=child.spec.id,
                state=child.state,
                generation=child.generation,
                restart=child.spec.restart,
            )
            for child in self._children
        )

    def statistics(self) -> SupervisorStatistics:
        """Return a snapshot of the supervisor's counters."""
        return SupervisorStatistics(restarts=self._restarts, dropped_events=self._sink.dropped)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children, then supervise them until there is nothing left to supervise.

        ``task_status.started()`` is called once every child has started.  Returns when every
        child has ended for good (none is left running or due for a restart); with a
        permanent child that is never, so such a tree runs until it is cancelled or gives up.
        On cancellation the children are stopped in reverse order, each with its shutdown
        grace, and the cancellation propagates.

        Raises:
            ChildStartFailed: A child failed before ``task_status.started()`` during this
                supervisor's own start (from the child's exception).
            SupervisorGaveUp: More than ``intensity`` restarts within ``period`` (from the
                exception of the exit that broke the limit).
            RuntimeError: This supervisor is already running.
        """
        if self._running:
            raise RuntimeError(f"supervisor {self._name!r} is already running")
        self._running = True
        self._reset()
        try:
            failure = await self._run_tree(task_status)
        finally:
            self._running = False
            self._nursery = None
        if isinstance(failure, _StartFailure):
            raise ChildStartFailed(self._name, failure.child_id) from failure.exception
        if isinstance(failure, _GiveUp):
            raise SupervisorGaveUp(
                self._name,
                failure.child_id,
                intensity=self._intensity,
                period=self._period,
                time=failure.time,
            ) from failure.exception

    async def terminate_child(self, child_id: str) -> None:
        """Stop one child gracefully and do not restart it (OTP's ``terminate_child``).

        The stop is the same as at shutdown: a cancellation, then up to the child's shutdown
        for its grace blocks.  It is never counted as a crash, whatever the restart type or
        strategy, and the other children are left alone.  Returns once the child has ended.

        Raises:
            KeyError: No child has this id.
            RuntimeError: The supervisor is not running.
        """
        child = self._by_id[child_id]
        if not self._running:
            raise RuntimeError(f"supervisor {self._name!r} is not running")
        request = _Terminate(child)
        self._commands.append(request)
        self._wakeup.set()
        await request.done.wait()

    # ------------------------------------------------------------------ the tree

    async def _run_tree(self, task_status: trio.TaskStatus[None]) -> _StartFailure | _GiveUp | None:
        failure: _StartFailure | _GiveUp | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                failure = await self._start_all()
                if failure is None:
                    task_status.started()
                    failure = await self._supervise()
            finally:
                # Rule 4: the orderly stop, bounded by the grace our parent gives us.
                with shutdown_grace():
                    await self._stop_all()
                self._kill_all()
                self._release_commands()
        return failure

    async def _start_all(self) -> _StartFailure | None:
        for child in self._children:
            exception = await self._start(child)
            if exception is not None:
                return _StartFailure(child.spec.id, exception)
        return None

    async def _supervise(self) -> _GiveUp | None:
        while True:
            # A fresh event before looking, so an end during the look wakes the next wait.
            self._wakeup = trio.Event()
            while self._commands:
                await self._terminate(self._commands.popleft())
            while (run := self._next_ended_run()) is not None:
                give_up = await self._handle_end(run)
                if give_up is not None:
                    return give_up
            if all(child.state is ChildState.TERMINATED for child in self._children):
                return None
            await self._wakeup.wait()

    def _next_ended_run(self) -> _Run | None:
        ended = [run for child in self._children if (run := child.run) is not None and run.ended]
        return min(ended, key=lambda run: run.end_seq, default=None)

    async def _handle_end(self, run: _Run) -> _GiveUp | None:
        child = run.child
        child.run = None
        if not _restarts_after(child.spec.restart, crashed=run.exception is not None):
            child.state = ChildState.TERMINATED
            return None
        child.state = ChildState.PENDING
        return await self._restart(child, run.exception)

    async def _restart(self, child: _Child, cause: Exception | None) -> _GiveUp | None:
        while True:
            now = trio.current_time()
            if self._exceeds_intensity(now):
                self._sink.emit(
                    GaveUp(supervisor=self._name, child_id=child.spec.id, time=now, exception=cause)
                )
                return _GiveUp(child.spec.id, cause, now)
            self._restarts += 1
            group = self._restart_group(child)
            for member in reversed(group):
                await self._stop_child(member)
                if member.spec.restart is Restart.TEMPORARY:
                    member.state = ChildState.TERMINATED
            failed = await self._start_group(group)
            if failed is None:
                return None
            # A restart that fails to start is one more crash of that child (OTP: try again).
            child, cause = failed

    def _exceeds_intensity(self, now: float) -> bool:
        # OTP's sliding window: restarts at or after `now - period` count, this one included.
        threshold = now - self._period
        while self._restart_times and self._restart_times[0] < threshold:
            self._restart_times.popleft()
        self._restart_times.append(now)
        return len(self._restart_times) > self._intensity

    def _restart_group(self, child: _Child) -> list[_Child]:
        if self._strategy is Strategy.ONE_FOR_ONE:
            return [child]
        first = 0 if self._strategy is Strategy.ONE_FOR_ALL else child.index
        # Children that ended for good stay ended: a group restart does not revive them.
        return [c for c in self._children[first:] if c.state is not ChildState.TERMINATED]

    async def _start_group(self, group: list[_Child]) -> tuple[_Child, Exception] | None:
        for member in group:
            if member.state is ChildState.TERMINATED:
                continue
            member.generation += 1
            self._sink.emit(
                ChildRestarted(
                    supervisor=self._name,
                    child_id=member.spec.id,
                    time=trio.current_time(),
                    generation=member.generation,
                )
            )
            exception = await self._start(member)
            if exception is not None:
                return member, exception
        return None

    async def _terminate(self, request: _Terminate) -> None:
        try:
            await self._stop_child(request.child)
            request.child.state = ChildState.TERMINATED
        finally:
            request.done.set()

    # ------------------------------------------------------------------ one child

    async def _start(self, child: _Child) -> Exception | None:
        assert self._nursery is not None
        run = _Run(child)
        child.run = run
        child.state = ChildState.STARTING
        try:
            await self._nursery.start(self._child_task, run)
        except Exception as exc:
            child.run = None
            child.state = ChildState.PENDING
            return exc
        if not run.started:
            # The child called started() into this cancelled start and trio returned
            # normally all the same: it did not start, and we are being cancelled.
            await trio.lowlevel.checkpoint()
        return None

    async def _child_task(self, run: _Run, *, task_status: trio.TaskStatus[None]) -> None:
        run.task = trio.lowlevel.current_task()
        run.stop.install()
        try:
            exception = await self._run_child(
                run, _StartHook(task_status, lambda: self._started(run))
            )
            # Not started yet means trio refused its started() and it returned: it never ran
            # (as when the cancellation of a start reaches a child earlier), no event is due.
            if run.started:
                self._ended(run, exception)
        finally:
            run.done.set()

    async def _run_child(self, run: _Run, task_status: _StartHook) -> Exception | None:
        try:
            with run.stop.scope:
                target = run.child.spec.start(run.wiring)
                run.shutdown = self._shutdown_of(run.child.spec, target)
                if isinstance(target, Actor):
                    await target.run(task_status=task_status)
                else:
                    await target(task_status=task_status)
                if not run.started and not run.start_cancelled:
                    raise RuntimeError(
                        f"child {run.child.spec.id!r} returned before calling task_status.started()"
                    )
        except Exception as exc:
            if not run.started:
                self._ended(run, exc)
                raise  # Rule 2: out of nursery.start(), into the supervisor
            return exc
        finally:
            run.wiring.close()
        return None

    @staticmethod
    def _shutdown_of(spec: ChildSpec, target: Startable) -> float | None:
        if spec.shutdown is Shutdown.DEFAULT:
            return None if isinstance(target, Supervisor) else WORKER_SHUTDOWN
        return spec.shutdown

    def _started(self, run: _Run) -> None:
        assert run.task is not None
        if run.task.parent_nursery is not self._nursery:
            # trio did not move the task: its start is cancelled.  Shielding the run now
            # would keep that cancellation out for good, and nothing would stop the child.
            run.start_cancelled = True
            return
        run.started = True
        run.stop.scope.shield = True  # Rule 1: from now on only this supervisor stops it
        run.child.state = ChildState.RUNNING
        self._sink.emit(
            ChildStarted(
                supervisor=self._name,
                child_id=run.child.spec.id,
                time=trio.current_time(),
                generation=run.generation,
            )
        )

    def _ended(self, run: _Run, exception: Exception | None) -> None:
        run.ended = True
        run.exception = exception
        self._end_seq += 1
        run.end_seq = self._end_seq
        child_id, now, generation = run.child.spec.id, trio.current_time(), run.generation
        event: LifecycleEvent
        if run.stop.requested:
            event = ChildStopped(
                supervisor=self._name,
                child_id=child_id,
                time=now,
                generation=generation,
                exception=exception,
            )
        elif exception is not None:
            event = ChildCrashed(
                supervisor=self._name,
                child_id=child_id,
                time=now,
                generation=generation,
                exception=exception,
            )
        else:
            event = ChildExited(
                supervisor=self._name, child_id=child_id, time=now, generation=generation
            )
        self._sink.emit(event)
        if run.started:
            self._wakeup.set()

    async def _stop_child(self, child: _Child) -> None:
        run = child.run
        if run is None:
            return
        child.state = ChildState.STOPPING
        if not run.ended:
            run.stop.request(run.shutdown)
        await run.done.wait()
        child.run = None
        child.state = ChildState.PENDING

    async def _stop_all(self) -> None:
        for child in reversed(self._children):
            await self._stop_child(child)
            child.state = ChildState.TERMINATED

    def _kill_all(self) -> None:
        # Reached with live runs only when our own grace ran out mid-stop: zero grace for them.
        for child in self._children:
            if child.run is not None and not child.run.ended:
                child.run.stop.request(0)
            child.state = ChildState.TERMINATED

    def _release_commands(self) -> None:
        while self._commands:
            self._commands.popleft().done.set()
