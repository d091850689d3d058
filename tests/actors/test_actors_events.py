"""The lifecycle event stream: content, order, and the drop policy when it is full."""

from __future__ import annotations

import pytest
import trio
from actors_helpers import EventLog, by_generation, crash_after, return_after, spec

from actors import (
    ChildCrashed,
    ChildExited,
    ChildRestarted,
    ChildStarted,
    ChildStopped,
    GaveUp,
    LifecycleEvent,
    Restart,
    Supervisor,
    SupervisorGaveUp,
)


async def test_the_stream_tells_the_whole_story(autojump_clock: object) -> None:
    log = EventLog()
    supervisor = Supervisor(
        [
            spec("w", by_generation(crash_after(1), return_after(1), crash_after(1))),
            spec("t", return_after(0.5), restart=Restart.TRANSIENT),
        ],
        intensity=2,
        period=10,
        events=log.send,
        name="root",
    )
    with pytest.raises(SupervisorGaveUp) as caught:
        await supervisor.run()
    events = log.drain()
    crashes = [event.exception for event in events if isinstance(event, ChildCrashed)]
    assert [str(exc) for exc in crashes] == ["w#0", "w#2"]
    assert caught.value.__cause__ is crashes[1]
    assert events == [
        ChildStarted(supervisor="root", child_id="w", time=0.0, generation=0),
        ChildStarted(supervisor="root", child_id="t", time=0.0, generation=0),
        ChildExited(supervisor="root", child_id="t", time=0.5, generation=0),
        ChildCrashed(supervisor="root", child_id="w", time=1.0, generation=0, exception=crashes[0]),
        ChildRestarted(supervisor="root", child_id="w", time=1.0, generation=1),
        ChildStarted(supervisor="root", child_id="w", time=1.0, generation=1),
        ChildExited(supervisor="root", child_id="w", time=2.0, generation=1),
        ChildRestarted(supervisor="root", child_id="w", time=2.0, generation=2),
        ChildStarted(supervisor="root", child_id="w", time=2.0, generation=2),
        ChildCrashed(supervisor="root", child_id="w", time=3.0, generation=2, exception=crashes[1]),
        GaveUp(supervisor="root", child_id="w", time=3.0, exception=crashes[1]),
    ]


async def test_a_full_stream_drops_and_counts_and_never_blocks(autojump_clock: object) -> None:
    send, receive = trio.open_memory_channel[LifecycleEvent](2)
    supervisor = Supervisor([spec("w", crash_after(1))], intensity=3, period=5, events=send)
    with pytest.raises(SupervisorGaveUp):
        await supervisor.run()
    # Nobody read the stream, yet the supervisor gave up at the same time as ever.
    assert trio.current_time() == 4.0
    kept = [receive.receive_nowait(), receive.receive_nowait()]
    assert [type(event) for event in kept] == [ChildStarted, ChildCrashed]
    # 4 runs: 4 started + 4 crashed + 3 restarted + 1 gave up = 12 events, 2 kept.
    assert supervisor.statistics().dropped_events == 10
    with pytest.raises(trio.WouldBlock):
        receive.receive_nowait()


async def test_a_closed_stream_counts_drops_without_failing(autojump_clock: object) -> None:
    send, receive = trio.open_memory_channel[LifecycleEvent](10)
    receive.close()
    supervisor = Supervisor([spec("w")], events=send)
    with trio.move_on_after(1):
        await supervisor.run()
    assert supervisor.statistics().dropped_events == 2  # started, stopped


async def test_stop_events_come_in_reverse_order(autojump_clock: object) -> None:
    log = EventLog()
    supervisor = Supervisor([spec(name) for name in "abcd"], events=log.send)
    with trio.move_on_after(1):
        await supervisor.run()
    stopped = [e for e in log.drain() if isinstance(e, ChildStopped)]
    assert [(e.child_id, e.time, e.exception) for e in stopped] == [
        ("d", 1.0, None),
        ("c", 1.0, None),
        ("b", 1.0, None),
        ("a", 1.0, None),
    ]
