"""Scripted children and an event log for the supervisor tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

import trio

from actors import ChildSpec, LifecycleEvent, Restart, Shutdown, Wiring

#: What one run of a scripted child does after it has called task_status.started().
Behaviour = Callable[[Wiring], Awaitable[None]]


class Boom(Exception):
    """The crash of a scripted child; its message names the run (``id#generation``)."""


async def forever(wiring: Wiring) -> None:
    await trio.sleep_forever()


def crash_after(seconds: float) -> Behaviour:
    async def behaviour(wiring: Wiring) -> None:
        await trio.sleep(seconds)
        raise Boom(f"{wiring.child_id}#{wiring.generation}")

    return behaviour


def return_after(seconds: float) -> Behaviour:
    async def behaviour(wiring: Wiring) -> None:
        await trio.sleep(seconds)

    return behaviour


def by_generation(*behaviours: Behaviour, then: Behaviour = forever) -> Behaviour:
    """Run ``behaviours[n]`` in generation ``n`` and ``then`` in every later one."""

    async def behaviour(wiring: Wiring) -> None:
        chosen = behaviours[wiring.generation] if wiring.generation < len(behaviours) else then
        await chosen(wiring)

    return behaviour


class Scripted:
    """An actor that starts at once and then follows its behaviour."""

    def __init__(self, wiring: Wiring, behaviour: Behaviour) -> None:
        self._wiring = wiring
        self._behaviour = behaviour

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await self._behaviour(self._wiring)


def spec(
    child_id: str,
    behaviour: Behaviour = forever,
    *,
    restart: Restart = Restart.PERMANENT,
    shutdown: float | Literal[Shutdown.DEFAULT] | None = Shutdown.DEFAULT,
) -> ChildSpec:
    return ChildSpec(
        id=child_id,
        start=lambda wiring: Scripted(wiring, behaviour),
        restart=restart,
        shutdown=shutdown,
    )


class EventLog:
    """A roomy event channel for a test, read back with :meth:`drain`."""

    def __init__(self, capacity: int = 1000) -> None:
        self.send, self._receive = trio.open_memory_channel[LifecycleEvent](capacity)

    def drain(self) -> list[LifecycleEvent]:
        events: list[LifecycleEvent] = []
        while True:
            try:
                events.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                return events

    def close(self) -> None:
        self._receive.close()


def of_type(events: list[LifecycleEvent], kind: type[LifecycleEvent]) -> list[LifecycleEvent]:
    return [event for event in events if isinstance(event, kind)]


def ids(events: list[LifecycleEvent], kind: type[LifecycleEvent]) -> list[str]:
    return [event.child_id for event in of_type(events, kind)]
