"""The errors that ``actors`` raises on purpose.

``actors`` is general purpose and imports nothing from ``kora``, so it has its own small tree::

    ActorsError
    ├── ChildStartFailed     a child failed before task_status.started(): the supervisor's start fails
    ├── SupervisorGaveUp     more than `intensity` restarts within `period`: escalate to the parent
    ├── AskTimeout           (also a TimeoutError) no reply within the time allowed
    └── NoReply              the replier closed its reply handle without replying

``trio.Cancelled`` is never wrapped in any of them.
"""

from __future__ import annotations


class ActorsError(Exception):
    """Base class of every error ``actors`` raises on purpose."""


class ChildStartFailed(ActorsError):
    """A child raised (or returned) before it called ``task_status.started()``.

    Raised by :meth:`Supervisor.run` when a child fails during the supervisor's own start; the
    child's exception is the ``__cause__``.  Children started before it have been stopped, in
    reverse order, by the time this is raised.

    Attributes:
        supervisor: The name of the supervisor whose start failed.
        child_id: The id of the child that failed to start.
    """

    def __init__(self, supervisor: str, child_id: str) -> None:
        super().__init__(f"supervisor {supervisor!r}: child {child_id!r} failed to start")
        self.supervisor = supervisor
        self.child_id = child_id


class SupervisorGaveUp(ActorsError):
    """More than ``intensity`` restarts happened within ``period`` seconds.

    The supervisor has stopped all its children (in reverse order) and raises this ``from``
    the exception of the child exit that broke the limit (``None`` when that exit was a
    normal return of a permanent child).  A parent supervisor sees it as a crash of the child
    that is this supervisor (escalation).

    Attributes:
        supervisor: The name of the supervisor that gave up.
        child_id: The child whose exit broke the limit.
        intensity: The supervisor's ``intensity``.
        period: The supervisor's ``period`` in seconds.
        time: ``trio.current_time()`` when the limit was broken.
    """

    def __init__(
        self, supervisor: str, child_id: str, *, intensity: int, period: float, time: float
    ) -> None:
        super().__init__(
            f"supervisor {supervisor!r} gave up: more than {intensity} restart(s) within "
            f"{period} s (the last exit was of child {child_id!r})"
        )
        self.supervisor = supervisor
        self.child_id = child_id
        self.intensity = intensity
        self.period = period
        self.time = time


class AskTimeout(ActorsError, TimeoutError):
    """:func:`ask` got no reply within its ``timeout``.

    Attributes:
        timeout: The time allowed, in seconds (covers sending the request and the reply).
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no reply within {timeout} s")
        self.timeout = timeout


class NoReply(ActorsError):
    """The replier closed its :class:`Reply` without sending a reply (for example it crashed)."""
