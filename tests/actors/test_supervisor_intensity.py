"""Restart intensity: OTP's sliding window on trio.current_time(), with exact give-up times."""

from __future__ import annotations

import pytest
import trio
from actors_helpers import Boom, EventLog, crash_after, of_type, return_after, spec

from actors import ChildRestarted, GaveUp, Restart, Strategy, Supervisor, SupervisorGaveUp


@pytest.mark.parametrize(
    ("intensity", "period", "every", "gives_up_at"),
    [
        (3, 5, 1, 4.0),  # restarts at 1, 2, 3 are tolerated; the 4th within 5 s is not
        (1, 5, 3, 6.0),  # 3 and 6 are 3 s apart: two restarts within 5 s
        (1, 5, 5, 10.0),  # 5 and 10 are exactly `period` apart: OTP counts both
        (0, 5, 1, 1.0),  # intensity 0: the first restart is already one too many
        (2, 10, 4, 12.0),  # 4, 8, 12 are all within 10 s
    ],
)
async def test_gives_up_at_the_exact_virtual_time(
    autojump_clock: object, intensity: int, period: float, every: float, gives_up_at: float
) -> None:
    log = EventLog()
    supervisor = Supervisor(
        [spec("w", crash_after(every))], intensity=intensity, period=period, events=log.send
    )
    with pytest.raises(SupervisorGaveUp) as caught:
        await supervisor.run()
    assert trio.current_time() == gives_up_at
    error = caught.value
    assert (error.supervisor, error.child_id, error.time) == ("supervisor", "w", gives_up_at)
    assert (error.intensity, error.period) == (intensity, period)
    # Raised from the last crash: the run that broke the limit.
    assert isinstance(error.__cause__, Boom)
    runs = int(gives_up_at / every)
    assert str(error.__cause__) == f"w#{runs - 1}"
    events = log.drain()
    assert [e.time for e in of_type(events, ChildRestarted)] == [every * n for n in range(1, runs)]
    (gave_up,) = of_type(events, GaveUp)
    assert gave_up.time == gives_up_at
    assert isinstance(gave_up, GaveUp)
    assert gave_up.exception is error.__cause__


async def test_restarts_further_apart_than_the_period_never_give_up(
    autojump_clock: object,
) -> None:
    supervisor = Supervisor([spec("w", crash_after(6))], intensity=1, period=5)
    with trio.move_on_after(60):
        await supervisor.run()
    assert supervisor.statistics().restarts == 9  # crashes at 6, 12, ..., 54


async def test_a_permanent_child_that_keeps_returning_gives_up_with_no_cause(
    autojump_clock: object,
) -> None:
    supervisor = Supervisor([spec("w", return_after(1))], intensity=2, period=5)
    with pytest.raises(SupervisorGaveUp) as caught:
        await supervisor.run()
    assert trio.current_time() == 3.0
    assert caught.value.__cause__ is None


async def test_a_group_restart_counts_once(autojump_clock: object) -> None:
    log = EventLog()
    supervisor = Supervisor(
        [spec("a"), spec("w", crash_after(1)), spec("c")],
        strategy=Strategy.ONE_FOR_ALL,
        intensity=3,
        period=5,
        events=log.send,
    )
    with pytest.raises(SupervisorGaveUp):
        await supervisor.run()
    assert trio.current_time() == 4.0
    assert supervisor.statistics().restarts == 3
    assert len(of_type(log.drain(), ChildRestarted)) == 9  # 3 rounds of 3 children


async def test_restarts_of_different_children_share_one_budget(autojump_clock: object) -> None:
    supervisor = Supervisor(
        [spec("a", crash_after(2)), spec("b", crash_after(3))], intensity=2, period=5
    )
    with pytest.raises(SupervisorGaveUp) as caught:
        await supervisor.run()
    # a crashes at 2, b at 3, a at 4: three restarts within 5 s.
    assert trio.current_time() == 4.0
    assert caught.value.child_id == "a"


async def test_gave_up_stops_the_other_children_in_reverse_order(autojump_clock: object) -> None:
    log = EventLog()
    supervisor = Supervisor(
        [spec("a"), spec("b"), spec("w", crash_after(1), restart=Restart.TRANSIENT), spec("d")],
        intensity=0,
        events=log.send,
    )
    with pytest.raises(SupervisorGaveUp):
        await supervisor.run()
    events = log.drain()
    names = [type(e).__name__ + ":" + e.child_id for e in events[-4:]]
    assert names == ["GaveUp:w", "ChildStopped:d", "ChildStopped:b", "ChildStopped:a"]
