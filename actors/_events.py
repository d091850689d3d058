"""Lifecycle events of a supervision tree, and the never-blocking sink that emits them.

Every event is a frozen attrs value stamped with ``trio.current_time()``, so a test under a
mock clock can assert exact times.  The supervisor sends them with ``send_nowait`` on a
bounded channel the caller provides: when the channel is full (or its receivers are gone)
the event is dropped and counted (``Supervisor.statistics().dropped_events``).  A supervisor
never waits for an observer, since a slow diagnostics reader must not delay a restart.
"""

from __future__ import annotations

from typing import final

import attrs
import trio


@attrs.frozen(kw_only=True)
class LifecycleEvent:
    """Base class of every lifecycle event.

    Attributes:
        supervisor: The ``name`` of the supervisor that emitted it.
        child_id: The child it is about.
        time: ``trio.current_time()`` when it happened.
    """

    supervisor: str
    child_id: str
    time: float


@final
@attrs.frozen(kw_only=True)
class ChildStarted(LifecycleEvent):
    """The child called ``task_status.started()``; ``generation`` 0 is its first run."""

    generation: int


@final
@attrs.frozen(kw_only=True)
class ChildExited(LifecycleEvent):
    """The child's ``run`` returned normally (restarted only if it is permanent)."""

    generation: int


@final
@attrs.frozen(kw_only=True)
class ChildCrashed(LifecycleEvent):
    """The child's ``run`` raised (restarted unless it is temporary).

    A crash before ``task_status.started()`` is reported too; during the supervisor's own start
    it fails that start instead of being restarted.
    """

    generation: int
    exception: Exception


@final
@attrs.frozen(kw_only=True)
class ChildRestarted(LifecycleEvent):
    """The supervisor is starting the child again; ``generation`` is the new run's."""

    generation: int


@final
@attrs.frozen(kw_only=True)
class ChildStopped(LifecycleEvent):
    """The supervisor stopped the child (never a crash, never restarted by itself).

    ``exception`` is what the child raised while stopping, if anything (reported, not counted).
    """

    generation: int
    exception: Exception | None = None


@final
@attrs.frozen(kw_only=True)
class GaveUp(LifecycleEvent):
    """The restart intensity was exceeded; ``child_id`` is the child whose exit broke it.

    Emitted when the limit is broken, before the children are stopped; the supervisor then
    raises :class:`~actors.SupervisorGaveUp` from ``exception``.
    """

    exception: Exception | None


@final
class EventSink:
    """Emit events on an optional channel without ever blocking (internal).

    Policy when full: drop the event and count it.  A closed or broken channel counts as full.
    """

    __slots__ = ("_channel", "dropped")

    def __init__(self, channel: trio.MemorySendChannel[LifecycleEvent] | None) -> None:
        self._channel = channel
        self.dropped = 0

    def emit(self, event: LifecycleEvent) -> None:
        if self._channel is None:
            return
        try:
            self._channel.send_nowait(event)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.dropped += 1
