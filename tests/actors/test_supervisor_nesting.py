"""Nested supervisors: escalation, stop order through the tree, shutdown of a subtree."""

from __future__ import annotations

import pytest
import trio
from actors_helpers import Boom, EventLog, crash_after, ids, of_type, spec

from actors import (
    ChildCrashed,
    ChildRestarted,
    ChildSpec,
    ChildStartFailed,
    ChildStopped,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
    Wiring,
    shutdown_grace,
)


def subtree(children: list[ChildSpec], **options: object) -> ChildSpec:
    """A child that is a supervisor; a fresh Supervisor for every run, as OTP would."""
    child_id = str(options.pop("id", "sub"))
    shutdown = options.pop("shutdown", None)
    return ChildSpec(
        id=child_id,
        start=lambda wiring: Supervisor(children, name=child_id, **options),  # type: ignore[arg-type]
        **({} if shutdown is None else {"shutdown": shutdown}),  # type: ignore[arg-type]
    )


async def test_a_child_supervisor_that_gives_up_escalates_to_its_parent(
    autojump_clock: object,
) -> None:
    log = EventLog()
    inner = subtree([spec("w", crash_after(1))], intensity=1, period=5, events=log.send)
    outer = Supervisor([inner], intensity=1, period=5, events=log.send, name="outer")
    with pytest.raises(SupervisorGaveUp) as caught:
        await outer.run()
    # inner gives up at 2 (crashes at 1 and 2); outer restarts it; it gives up again at 4;
    # outer has then restarted twice within 5 s and gives up too.
    assert trio.current_time() == 4.0
    assert (caught.value.supervisor, caught.value.child_id, caught.value.time) == (
        "outer",
        "sub",
        4.0,
    )
    inner_error = caught.value.__cause__
    assert isinstance(inner_error, SupervisorGaveUp)
    assert (inner_error.supervisor, inner_error.child_id, inner_error.time) == ("sub", "w", 4.0)
    assert isinstance(inner_error.__cause__, Boom)
    events = log.drain()
    outer_crashes = [e for e in of_type(events, ChildCrashed) if e.supervisor == "outer"]
    assert [(e.child_id, e.time) for e in outer_crashes] == [("sub", 2.0), ("sub", 4.0)]


async def test_escalation_applies_the_parents_strategy(autojump_clock: object) -> None:
    log = EventLog()
    outer = Supervisor(
        [
            spec("before"),
            subtree([spec("w", crash_after(1))], intensity=0),
            spec("after"),
        ],
        strategy=Strategy.REST_FOR_ONE,
        intensity=5,
        events=log.send,
        name="outer",
    )
    with trio.move_on_after(1.5):
        await outer.run()
    restarted = [
        e.child_id for e in of_type(log.drain(), ChildRestarted) if e.supervisor == "outer"
    ]
    assert restarted == ["sub", "after"]


async def test_stop_order_runs_depth_first_in_reverse(autojump_clock: object) -> None:
    order: list[tuple[str, float]] = []

    class Tidy:
        def __init__(self, wiring: Wiring) -> None:
            self._id = wiring.child_id

        async def run(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with shutdown_grace():
                    await trio.sleep(1)
                order.append((self._id, trio.current_time()))

    tree = Supervisor(
        [
            ChildSpec(id="a", start=Tidy),
            subtree([ChildSpec(id="b1", start=Tidy), ChildSpec(id="b2", start=Tidy)], id="b"),
            ChildSpec(id="c", start=Tidy),
        ]
    )
    with trio.move_on_after(10):
        await tree.run()
    assert order == [("c", 11.0), ("b2", 12.0), ("b1", 13.0), ("a", 14.0)]


async def test_a_child_supervisor_gets_unbounded_shutdown_by_default(
    autojump_clock: object,
) -> None:
    """The worker default (5 s) would cut the subtree's 7 s of orderly stop; None does not."""
    order: list[str] = []

    class SlowStop:
        def __init__(self, wiring: Wiring) -> None:
            self._id = wiring.child_id

        async def run(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with shutdown_grace() as grace:
                    await trio.sleep(3.5)
                order.append(f"{self._id} {'cut' if grace.cancelled_caught else 'done'}")

    leaves = [ChildSpec(id=f"leaf{n}", start=SlowStop, shutdown=4) for n in (1, 2)]
    tree = Supervisor([subtree(leaves)])
    with trio.move_on_after(1):
        await tree.run()
    assert trio.current_time() == 8.0
    assert order == ["leaf2 done", "leaf1 done"]


async def test_a_finite_shutdown_on_a_child_supervisor_cuts_its_subtree(
    autojump_clock: object,
) -> None:
    order: list[tuple[str, float]] = []

    class SlowStop:
        def __init__(self, wiring: Wiring) -> None:
            self._id = wiring.child_id

        async def run(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with shutdown_grace():
                    await trio.sleep(3)
                order.append((self._id, trio.current_time()))

    leaves = [ChildSpec(id=f"leaf{n}", start=SlowStop, shutdown=100) for n in (1, 2)]
    log = EventLog()
    tree = Supervisor([subtree(leaves, shutdown=4, events=log.send)])
    with trio.move_on_after(1):
        await tree.run()
    # leaf2 finishes its 3 s; leaf1 has 1 s left of the subtree's 4 s and is then killed.
    assert order == [("leaf2", 4.0), ("leaf1", 5.0)]
    assert ids(log.drain(), ChildStopped) == ["leaf2", "leaf1"]


async def test_a_failed_start_deep_in_the_tree_fails_the_root_start(
    autojump_clock: object,
) -> None:
    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise Boom("deep")

    tree = Supervisor(
        [spec("a"), subtree([ChildSpec(id="leaf", start=lambda w: broken)], id="sub")],
        name="root",
    )
    with pytest.raises(ChildStartFailed) as caught:
        await tree.run()
    assert (caught.value.supervisor, caught.value.child_id) == ("root", "sub")
    inner = caught.value.__cause__
    assert isinstance(inner, ChildStartFailed)
    assert (inner.supervisor, inner.child_id) == ("sub", "leaf")
    assert str(inner.__cause__) == "deep"
