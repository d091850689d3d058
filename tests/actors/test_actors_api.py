"""Arguments, misuse, introspection and the public names of ``actors``."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from actors_helpers import EventLog, crash_after, of_type, spec

import actors
from actors import (
    Actor,
    ChildCrashed,
    ChildSpec,
    ChildStarted,
    ChildState,
    Restart,
    Shutdown,
    Supervisor,
    Wiring,
    shutdown_grace,
)


def test_every_public_name_is_exported_and_documented() -> None:
    for name in actors.__all__:
        value = getattr(actors, name)
        if isinstance(value, type):
            assert value.__doc__, f"{name} has no docstring"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"intensity": -1}, "intensity"),
        ({"intensity": 1.5}, "intensity"),
        ({"intensity": True}, "intensity"),
        ({"period": 0}, "period"),
        ({"period": math.nan}, "period"),
        ({"strategy": "one_for_one"}, "strategy"),
    ],
)
def test_supervisor_options_are_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Supervisor([spec("a")], **options)  # type: ignore[arg-type]


def test_child_ids_are_unique() -> None:
    with pytest.raises(ValueError, match=r"duplicate child ids: \['a'\]"):
        Supervisor([spec("a"), spec("b"), spec("a")])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"id": ""}, "child id"),
        ({"id": 3}, "child id"),
        ({"shutdown": -1}, "shutdown"),
        ({"shutdown": math.nan}, "shutdown"),
        ({"shutdown": "5"}, "shutdown"),
        ({"restart": "permanent"}, "restart"),
    ],
)
def test_child_specs_are_checked(fields: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"id": "a", "start": lambda wiring: None} | fields
    with pytest.raises((ValueError, TypeError), match=message):
        ChildSpec(**arguments)  # type: ignore[arg-type]


def test_child_spec_defaults_follow_otp() -> None:
    child = spec("a")
    assert child.restart is Restart.PERMANENT
    assert child.shutdown is Shutdown.DEFAULT
    assert ChildSpec(id="b", start=lambda w: Supervisor(), shutdown=0).shutdown == 0


async def test_a_supervisor_runs_once_at_a_time_and_can_run_again(
    autojump_clock: object,
) -> None:
    supervisor = Supervisor([spec("a", crash_after(1), restart=Restart.TEMPORARY)])
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        with pytest.raises(RuntimeError, match="already running"):
            await supervisor.run()
    assert supervisor.children()[0].state is ChildState.TERMINATED
    # A second run starts from scratch: the child is back to generation 0 and running again.
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        assert [(c.state, c.generation) for c in supervisor.children()] == [(ChildState.RUNNING, 0)]


async def test_terminate_child_needs_a_known_child_and_a_running_supervisor() -> None:
    supervisor = Supervisor([spec("a")])
    with pytest.raises(KeyError):
        await supervisor.terminate_child("nope")
    with pytest.raises(RuntimeError, match="not running"):
        await supervisor.terminate_child("a")


async def test_a_terminate_asked_during_the_final_stop_returns_when_it_is_over(
    autojump_clock: object,
) -> None:
    class SlowStop:
        def __init__(self, wiring: Wiring) -> None:
            pass

        async def run(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with shutdown_grace():
                    await trio.sleep(2)

    supervisor = Supervisor(
        [ChildSpec(id="slow", start=SlowStop), spec("w", crash_after(1))], intensity=0
    )
    returned_at: list[float] = []

    async def terminate_later() -> None:
        await trio.sleep(1.5)  # the supervisor gave up at 1 and is stopping "slow" until 3
        await supervisor.terminate_child("slow")
        returned_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(terminate_later)
        with pytest.raises(actors.SupervisorGaveUp):
            await supervisor.run()
    assert returned_at == [3.0]


async def test_children_reports_states_as_they_change(autojump_clock: object) -> None:
    class Stubborn:
        def __init__(self, wiring: Wiring) -> None:
            pass

        async def run(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with shutdown_grace():
                    await trio.sleep(1)

    supervisor = Supervisor([ChildSpec(id="s", start=Stubborn)])
    assert supervisor.name == "supervisor"
    assert supervisor.children()[0].state is ChildState.PENDING
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        nursery.start_soon(supervisor.terminate_child, "s")
        await trio.sleep(0.5)
        assert supervisor.children()[0].state is ChildState.STOPPING
        await trio.sleep(1)
        (info,) = supervisor.children()
        assert (info.id, info.state, info.restart) == (
            "s",
            ChildState.TERMINATED,
            Restart.PERMANENT,
        )


async def test_an_async_function_is_a_child_too(autojump_clock: object) -> None:
    runs: list[float] = []

    async def worker(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        runs.append(trio.current_time())
        task_status.started()
        await trio.sleep(1)

    supervisor = Supervisor(
        [ChildSpec(id="f", start=lambda wiring: worker, restart=Restart.TRANSIENT)]
    )
    await supervisor.run()
    assert runs == [0.0]
    assert not isinstance(worker, Actor)
    assert isinstance(supervisor, Actor)


async def test_calling_started_twice_is_a_crash(autojump_clock: object) -> None:
    async def twice(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(1)
        task_status.started()

    log = EventLog()
    supervisor = Supervisor(
        [ChildSpec(id="t", start=lambda wiring: twice, restart=Restart.TEMPORARY)],
        events=log.send,
    )
    await supervisor.run()
    events = log.drain()
    assert len(of_type(events, ChildStarted)) == 1
    (crashed,) = of_type(events, ChildCrashed)
    assert isinstance(crashed, ChildCrashed)
    assert isinstance(crashed.exception, RuntimeError)


async def test_shutdown_grace_outside_a_supervisor_is_a_plain_shield(
    autojump_clock: object,
) -> None:
    with trio.CancelScope() as outer:
        outer.cancel()
        with shutdown_grace() as grace:
            await trio.sleep(3)  # runs in full: shielded, with no deadline
        assert trio.current_time() == 3.0
        assert not grace.cancelled_caught
        await trio.sleep(1)  # the outer cancellation was only held back
    assert outer.cancelled_caught
    assert trio.current_time() == 3.0
