"""Strategy x restart type x ending: which children restart.

Three children a, b, c run for ever; at t=1 the middle one, b, ends: it crashes, returns, or
is cancelled (stopped with ``terminate_child``).  OTP's rules say which restart:

* restart type: permanent restarts after a crash and a return, transient only after a crash,
  temporary never; a cancellation is never a crash and is never restarted;
* strategy (only when b is restarted): one_for_one restarts b, one_for_all restarts a, b, c,
  rest_for_one restarts b and c.
"""

from __future__ import annotations

import itertools

import pytest
import trio
from actors_helpers import (
    Boom,
    EventLog,
    by_generation,
    crash_after,
    ids,
    of_type,
    return_after,
    spec,
)

from actors import (
    ChildCrashed,
    ChildExited,
    ChildRestarted,
    ChildState,
    ChildStopped,
    Restart,
    Strategy,
    Supervisor,
)

RESTARTED_GROUP = {
    Strategy.ONE_FOR_ONE: ["b"],
    Strategy.ONE_FOR_ALL: ["a", "b", "c"],
    Strategy.REST_FOR_ONE: ["b", "c"],
}
RESTARTS_AFTER = {
    ("crash", Restart.PERMANENT): True,
    ("crash", Restart.TRANSIENT): True,
    ("crash", Restart.TEMPORARY): False,
    ("return", Restart.PERMANENT): True,
    ("return", Restart.TRANSIENT): False,
    ("return", Restart.TEMPORARY): False,
    ("cancel", Restart.PERMANENT): False,
    ("cancel", Restart.TRANSIENT): False,
    ("cancel", Restart.TEMPORARY): False,
}
CASES = list(itertools.product(Strategy, Restart, ["crash", "return", "cancel"]))


@pytest.mark.parametrize(
    ("strategy", "restart", "ending"),
    CASES,
    ids=[f"{s.value}-{r.value}-{e}" for s, r, e in CASES],
)
async def test_which_children_restart(
    autojump_clock: object, strategy: Strategy, restart: Restart, ending: str
) -> None:
    ends = {"crash": crash_after(1), "return": return_after(1)}
    b_first_run = ends.get(ending)
    b = spec("b", by_generation(b_first_run) if b_first_run else by_generation(), restart=restart)
    log = EventLog()
    supervisor = Supervisor(
        [spec("a"), b, spec("c")], strategy=strategy, intensity=1, period=5, events=log.send
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        if ending == "cancel":
            await trio.sleep(1)
            await supervisor.terminate_child("b")
        await trio.sleep(2)
        states = {info.id: info for info in supervisor.children()}
        nursery.cancel_scope.cancel()

    events = log.drain()
    ended_event = {"crash": ChildCrashed, "return": ChildExited, "cancel": ChildStopped}[ending]
    assert next((e.child_id, e.time) for e in of_type(events, ended_event)) == ("b", 1.0)

    expected = RESTARTED_GROUP[strategy] if RESTARTS_AFTER[ending, restart] else []
    assert ids(events, ChildRestarted) == expected
    assert all(e.time == 1.0 for e in of_type(events, ChildRestarted))
    assert supervisor.statistics().restarts == (1 if expected else 0)
    for child_id in "abc":
        assert states[child_id].generation == (1 if child_id in expected else 0)
        if child_id == "b" and not expected:
            assert states["b"].state is ChildState.TERMINATED
        else:
            assert states[child_id].state is ChildState.RUNNING
    # A cancellation never shows up as a crash, whatever the restart type.
    if ending != "crash":
        assert of_type(events, ChildCrashed) == []


async def test_cancelling_the_tree_restarts_nothing_and_counts_nothing(
    autojump_clock: object,
) -> None:
    log = EventLog()
    supervisor = Supervisor(
        [spec("a"), spec("b", restart=Restart.TRANSIENT), spec("c", restart=Restart.TEMPORARY)],
        strategy=Strategy.ONE_FOR_ALL,
        intensity=0,  # any counted restart would make it give up
        events=log.send,
    )
    with trio.move_on_after(3) as scope:
        await supervisor.run()
    assert scope.cancelled_caught
    events = log.drain()
    assert ids(events, ChildStopped) == ["c", "b", "a"]
    assert of_type(events, ChildRestarted) == []
    assert of_type(events, ChildCrashed) == []
    assert supervisor.statistics().restarts == 0
    assert {info.state for info in supervisor.children()} == {ChildState.TERMINATED}


@pytest.mark.parametrize("strategy", list(Strategy), ids=[s.value for s in Strategy])
async def test_temporary_siblings_in_a_group_restart_are_stopped_and_not_restarted(
    autojump_clock: object, strategy: Strategy
) -> None:
    log = EventLog()
    supervisor = Supervisor(
        [
            spec("a", by_generation(crash_after(1))),
            spec("t", restart=Restart.TEMPORARY),
            spec("p"),
        ],
        strategy=strategy,
        events=log.send,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(2)
        states = {info.id: info.state for info in supervisor.children()}
        nursery.cancel_scope.cancel()
    events = log.drain()
    if strategy is Strategy.ONE_FOR_ONE:
        assert ids(events, ChildRestarted) == ["a"]
        assert states["t"] is ChildState.RUNNING
    else:
        assert ids(events, ChildRestarted) == ["a", "p"]
        assert ids(events, ChildStopped)[:2] == ["p", "t"]  # reverse order, at t=1
        assert states["t"] is ChildState.TERMINATED


async def test_a_child_that_ended_for_good_is_not_revived_by_a_group_restart(
    autojump_clock: object,
) -> None:
    log = EventLog()
    supervisor = Supervisor(
        [
            spec("done", return_after(1), restart=Restart.TRANSIENT),
            spec("crashy", by_generation(crash_after(2))),
        ],
        strategy=Strategy.ONE_FOR_ALL,
        events=log.send,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(3)
        nursery.cancel_scope.cancel()
    events = log.drain()
    assert ids(events, ChildExited) == ["done"]
    assert ids(events, ChildRestarted) == ["crashy"]


async def test_simultaneous_crashes_in_one_for_all_restart_the_group_once(
    autojump_clock: object,
) -> None:
    log = EventLog()
    supervisor = Supervisor(
        [spec("a", by_generation(crash_after(1))), spec("b", by_generation(crash_after(1)))],
        strategy=Strategy.ONE_FOR_ALL,
        intensity=1,
        events=log.send,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    events = log.drain()
    assert sorted(ids(events, ChildCrashed)) == ["a", "b"]
    # b's crash is absorbed by the group restart that a's crash started: one restart, not two.
    assert ids(events, ChildRestarted) == ["a", "b"]
    assert supervisor.statistics().restarts == 1


async def test_crash_exceptions_reach_the_events(autojump_clock: object) -> None:
    log = EventLog()
    supervisor = Supervisor([spec("a", by_generation(crash_after(1)))], events=log.send)
    with trio.move_on_after(2):
        await supervisor.run()
    (crashed,) = of_type(log.drain(), ChildCrashed)
    assert isinstance(crashed, ChildCrashed)
    assert isinstance(crashed.exception, Boom)
    assert str(crashed.exception) == "a#0"
