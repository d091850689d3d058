"""Start in order, failing starts, reverse stop order and shutdown graces."""

from __future__ import annotations

import math

import pytest
import trio
from actors_helpers import (
    Boom,
    EventLog,
    Scripted,
    by_generation,
    crash_after,
    ids,
    of_type,
    return_after,
    spec,
)

from actors import (
    WORKER_SHUTDOWN,
    ChildCrashed,
    ChildRestarted,
    ChildSpec,
    ChildStarted,
    ChildStartFailed,
    ChildState,
    ChildStopped,
    Restart,
    Shutdown,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
    Wiring,
    shutdown_grace,
)


class SlowStarter:
    """Takes `delay` seconds to be ready; records when it started."""

    def __init__(self, wiring: Wiring, delay: float, log: list[tuple[str, float]]) -> None:
        self._id = wiring.child_id
        self._delay = delay
        self._log = log

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._log.append((f"begin {self._id}", trio.current_time()))
        await trio.sleep(self._delay)
        task_status.started()
        await trio.sleep_forever()


def slow(child_id: str, delay: float, log: list[tuple[str, float]]) -> ChildSpec:
    return ChildSpec(id=child_id, start=lambda wiring: SlowStarter(wiring, delay, log))


class Graceful:
    """On stop, spends `cleanup` seconds in a grace block and records when it ended."""

    def __init__(self, wiring: Wiring, cleanup: float, log: list[tuple[str, float]]) -> None:
        self._id = wiring.child_id
        self._cleanup = cleanup
        self._log = log

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with shutdown_grace() as grace:
                await trio.sleep(self._cleanup)
            outcome = "cut" if grace.cancelled_caught else "done"
            self._log.append((f"{outcome} {self._id}", trio.current_time()))


def graceful(
    child_id: str,
    cleanup: float,
    log: list[tuple[str, float]],
    shutdown: float | Shutdown | None = Shutdown.DEFAULT,
) -> ChildSpec:
    return ChildSpec(
        id=child_id,
        start=lambda wiring: Graceful(wiring, cleanup, log),
        shutdown=shutdown,
    )


async def test_children_start_one_after_another_and_then_the_supervisor(
    autojump_clock: object,
) -> None:
    log: list[tuple[str, float]] = []
    supervisor = Supervisor([slow("a", 1, log), slow("b", 2, log), slow("c", 0.5, log)])
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        assert trio.current_time() == 3.5
        assert [info.state for info in supervisor.children()] == [ChildState.RUNNING] * 3
        nursery.cancel_scope.cancel()
    assert log == [("begin a", 0.0), ("begin b", 1.0), ("begin c", 3.0)]


@pytest.mark.parametrize("how", ["raises", "returns"])
async def test_a_child_failing_before_started_fails_the_supervisor_start(
    autojump_clock: object, how: str
) -> None:
    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(1)
        if how == "raises":
            raise Boom("no start")

    log = EventLog()
    supervisor = Supervisor(
        [spec("a"), ChildSpec(id="b", start=lambda wiring: broken), spec("c")],
        events=log.send,
        name="root",
    )
    async with trio.open_nursery() as nursery:
        with pytest.raises(ChildStartFailed) as caught:
            await nursery.start(supervisor.run)
    assert (caught.value.supervisor, caught.value.child_id) == ("root", "b")
    if how == "raises":
        assert isinstance(caught.value.__cause__, Boom)
    else:
        assert isinstance(caught.value.__cause__, RuntimeError)
        assert "before calling task_status.started()" in str(caught.value.__cause__)
    events = log.drain()
    assert ids(events, ChildStarted) == ["a"]  # c never started
    assert ids(events, ChildCrashed) == ["b"]
    assert ids(events, ChildStopped) == ["a"]
    assert trio.current_time() == 1.0


async def test_a_failing_start_factory_fails_the_start(autojump_clock: object) -> None:
    def factory(wiring: Wiring) -> SlowStarter:
        raise Boom("factory")

    supervisor = Supervisor([ChildSpec(id="a", start=factory)])
    with pytest.raises(ChildStartFailed) as caught:
        await supervisor.run()
    assert str(caught.value.__cause__) == "factory"


async def test_a_restart_that_fails_to_start_is_another_crash(autojump_clock: object) -> None:
    generations: list[int] = []

    class FailsToRestart:
        def __init__(self, wiring: Wiring) -> None:
            self._generation = wiring.generation

        async def run(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            generations.append(self._generation)
            if self._generation in (1, 2):
                raise Boom("cannot start again")
            task_status.started()
            if self._generation == 0:
                await trio.sleep(1)
                raise Boom("crash")
            await trio.sleep_forever()

    log = EventLog()
    supervisor = Supervisor(
        [spec("a"), ChildSpec(id="f", start=FailsToRestart), spec("c")],
        strategy=Strategy.REST_FOR_ONE,
        intensity=3,
        events=log.send,
    )
    with trio.move_on_after(2):
        await supervisor.run()
    assert generations == [0, 1, 2, 3]
    assert supervisor.statistics().restarts == 3
    events = log.drain()
    # c is stopped once, then started only after f finally started (rest_for_one order).
    assert ids(events, ChildStarted)[-2:] == ["f", "c"]
    assert next(e.child_id for e in events if isinstance(e, ChildStopped)) == "c"


async def test_a_restart_that_keeps_failing_to_start_gives_up(autojump_clock: object) -> None:
    class NeverAgain:
        def __init__(self, wiring: Wiring) -> None:
            self._generation = wiring.generation

        async def run(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            if self._generation > 0:
                raise Boom(f"start #{self._generation}")
            task_status.started()
            await trio.sleep(1)
            raise Boom("crash")

    supervisor = Supervisor([ChildSpec(id="n", start=NeverAgain)], intensity=2)
    with pytest.raises(SupervisorGaveUp) as caught:
        await supervisor.run()
    assert str(caught.value.__cause__) == "start #2"
    assert trio.current_time() == 1.0


async def test_children_stop_in_reverse_order_one_at_a_time(autojump_clock: object) -> None:
    log: list[tuple[str, float]] = []
    supervisor = Supervisor([graceful(name, 1, log) for name in "abc"])
    with trio.move_on_after(10):
        await supervisor.run()
    # Each child finishes its 1 s cleanup before the next one is asked to stop.
    assert log == [("done c", 11.0), ("done b", 12.0), ("done a", 13.0)]


async def test_a_child_ignoring_the_stop_is_cancelled_after_exactly_its_shutdown(
    autojump_clock: object,
) -> None:
    log: list[tuple[str, float]] = []
    supervisor = Supervisor(
        [graceful("a", math.inf, log), graceful("b", math.inf, log, shutdown=2.5)]
    )
    with trio.move_on_after(10):
        await supervisor.run()
    # b's grace is cut 2.5 s after the stop; a's default is the OTP worker default, 5 s.
    assert WORKER_SHUTDOWN == 5.0
    assert log == [("cut b", 12.5), ("cut a", 17.5)]


async def test_shutdown_zero_is_a_brutal_kill_and_none_waits(autojump_clock: object) -> None:
    log: list[tuple[str, float]] = []
    supervisor = Supervisor(
        [graceful("patient", 100, log, shutdown=None), graceful("brutal", 100, log, shutdown=0)]
    )
    with trio.move_on_after(10):
        await supervisor.run()
    assert log == [("cut brutal", 10.0), ("done patient", 110.0)]


async def test_stop_is_not_a_crash_even_when_the_child_raises_while_stopping(
    autojump_clock: object,
) -> None:
    class RaisesOnStop:
        def __init__(self, wiring: Wiring) -> None:
            pass

        async def run(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                raise Boom("while stopping")

    log = EventLog()
    supervisor = Supervisor([ChildSpec(id="r", start=RaisesOnStop)], intensity=0, events=log.send)
    with trio.move_on_after(1):
        await supervisor.run()
    (stopped,) = of_type(log.drain(), ChildStopped)
    assert isinstance(stopped, ChildStopped)
    assert str(stopped.exception) == "while stopping"
    assert supervisor.statistics().restarts == 0


async def test_cancelling_the_supervisor_during_a_start_cancels_the_starting_child(
    autojump_clock: object,
) -> None:
    log: list[tuple[str, float]] = []
    events = EventLog()
    supervisor = Supervisor(
        [graceful("ready", 1, log), slow("starting", 10, log)], events=events.send
    )
    async with trio.open_nursery() as nursery:
        with trio.move_on_after(3) as scope:
            await nursery.start(supervisor.run)
    assert scope.cancelled_caught
    assert log == [("begin starting", 0.0), ("done ready", 4.0)]
    assert ids(events.drain(), ChildStarted) == ["ready"]


async def test_terminate_child_stops_one_child_with_its_grace(autojump_clock: object) -> None:
    log: list[tuple[str, float]] = []
    supervisor = Supervisor([graceful("a", 1, log), graceful("b", 2, log)], intensity=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(5)
        await supervisor.terminate_child("a")
        assert trio.current_time() == 6.0
        states = [info.state for info in supervisor.children()]
        assert states == [ChildState.TERMINATED, ChildState.RUNNING]
        await supervisor.terminate_child("a")  # already terminated: nothing to do
        nursery.cancel_scope.cancel()
    assert log == [("done a", 6.0), ("done b", 8.0)]


async def test_a_child_can_terminate_itself(autojump_clock: object) -> None:
    supervisor: Supervisor

    async def quitter(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(1)
        await supervisor.terminate_child("q")

    supervisor = Supervisor([ChildSpec(id="q", start=lambda wiring: quitter)], intensity=0)
    await supervisor.run()  # returns: its only child ended for good
    assert trio.current_time() == 1.0
    assert supervisor.children()[0].state is ChildState.TERMINATED


async def test_the_supervisor_returns_when_every_child_ended_for_good(
    autojump_clock: object,
) -> None:
    log = EventLog()
    supervisor = Supervisor(
        [
            spec("temporary", crash_after(1), restart=Restart.TEMPORARY),
            spec(
                "transient",
                by_generation(crash_after(2), then=return_after(1)),
                restart=Restart.TRANSIENT,
            ),
        ],
        events=log.send,
    )
    await supervisor.run()
    # transient crashed at 2 (restarted), then returned at 3: nothing is left to supervise.
    assert trio.current_time() == 3.0
    assert ids(log.drain(), ChildRestarted) == ["transient"]
    assert {info.state for info in supervisor.children()} == {ChildState.TERMINATED}


async def test_an_empty_supervisor_returns_at_once(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(Supervisor([]).run)
    assert trio.current_time() == 0.0


class StartsUnderShield:
    """Gets ready inside a shield, so a cancellation of its start finds it in started().

    trio does not move a task that calls ``started()`` while its ``nursery.start`` is
    cancelled; the supervisor must then leave the run unshielded so the cancellation reaches
    the child.  It runs on for `runs_for` seconds if nothing stops it (bounded, so the old
    bug shows as a failure and not a hang).
    """

    def __init__(self, wiring: Wiring, log: list[tuple[str, float]], runs_for: float) -> None:
        self._id = wiring.child_id
        self._log = log
        self._runs_for = runs_for

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope(shield=True):
            await trio.sleep(2)
        task_status.started()  # no checkpoint since the cancellation: still "starting"
        try:
            await trio.sleep(self._runs_for)
        except trio.Cancelled:
            self._log.append((f"stopped {self._id}", trio.current_time()))
            raise
        self._log.append((f"ran on {self._id}", trio.current_time()))


def starts_under_shield(child_id: str, log: list[tuple[str, float]]) -> ChildSpec:
    # Temporary: with the old bug it must end after its 30 s rather than be restarted.
    return ChildSpec(
        id=child_id,
        start=lambda wiring: StartsUnderShield(wiring, log, 30),
        restart=Restart.TEMPORARY,
    )


async def test_a_child_reporting_started_into_a_cancelled_start_is_still_cancelled(
    autojump_clock: object,
) -> None:
    log: list[tuple[str, float]] = []
    events = EventLog()
    supervisor = Supervisor(
        [graceful("ready", 1, log), starts_under_shield("late", log)], events=events.send
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(1) as scope:
                await nursery.start(supervisor.run)
    assert scope.cancelled_caught
    # "late" is stopped at its first checkpoint after started(), then "ready" with its grace.
    assert log == [("stopped late", 2.0), ("done ready", 3.0)]
    assert ids(events.drain(), ChildStarted) == ["ready"]
    assert {info.state for info in supervisor.children()} == {ChildState.TERMINATED}


async def test_a_nested_supervisor_started_into_a_cancelled_start_stops_its_children(
    autojump_clock: object,
) -> None:
    log: list[tuple[str, float]] = []
    # Everything temporary and bounded, so that the old bug fails the test, not hangs it.
    inner = Supervisor([starts_under_shield("late", log)], name="in")
    outer = Supervisor(
        [ChildSpec(id="inner", start=lambda wiring: inner, restart=Restart.TEMPORARY)],
        name="out",
    )
    with trio.fail_after(10):
        with trio.move_on_after(1):
            await outer.run()
    assert log == [("stopped late", 2.0)]
    assert trio.current_time() == 2.0


async def test_a_restart_whose_start_is_cancelled_does_not_leave_the_child_running(
    autojump_clock: object,
) -> None:
    log: list[tuple[str, float]] = []
    generation_log: list[int] = []

    def start(wiring: Wiring) -> StartsUnderShield | Scripted:
        generation_log.append(wiring.generation)
        if wiring.generation == 0:
            return Scripted(wiring, crash_after(1))
        return StartsUnderShield(wiring, log, 30)

    supervisor = Supervisor([ChildSpec(id="c", start=start, restart=Restart.TRANSIENT)])
    with trio.fail_after(10):
        with trio.move_on_after(2):  # the restart began at 1 and is ready only at 3
            await supervisor.run()
    assert generation_log == [0, 1]
    assert log == [("stopped c", 3.0)]


async def test_a_child_returning_right_after_a_refused_started_is_no_failed_start(
    autojump_clock: object,
) -> None:
    async def quick(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope(shield=True):
            await trio.sleep(2)
        task_status.started()  # refused: the start was cancelled at 1

    events = EventLog()
    supervisor = Supervisor([ChildSpec(id="q", start=lambda wiring: quick)], events=events.send)
    with trio.fail_after(10):
        with trio.move_on_after(1) as scope:
            await supervisor.run()  # a cancellation, not ChildStartFailed
    assert scope.cancelled_caught
    assert trio.current_time() == 2.0
    assert events.drain() == []  # it never ran: neither started nor exited
    assert supervisor.children()[0].state is ChildState.TERMINATED
