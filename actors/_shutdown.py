"""How a supervisor stops one child: a cancellation with a bounded grace period.

trio has no brutal kill: a task stops only when it reaches a checkpoint in a cancelled scope,
and a shielded scope keeps cancellation out entirely.  So the supervisor's stop is built from
two kinds of scope:

* the child's **run scope**, one per run, cancelled by the stop request.  Code of the child
  outside a grace block stops at its next checkpoint, like an OTP process that does not trap
  exits and dies at once on ``shutdown``;
* **grace scopes**, opened by the child with ``with shutdown_grace():`` around cleanup that
  must await (flush a buffer, say goodbye to a peer).  A grace scope is shielded, so the stop
  request does not interrupt it, but its deadline is set to *stop request time + the child's
  shutdown*, so the cleanup gets exactly ``ChildSpec.shutdown`` seconds and is cancelled
  after that (``0`` is OTP's ``brutal_kill``; ``None`` waits for ever, OTP's ``infinity``).

A child must not shield itself in any other way without a deadline: nothing can stop it then.

The stop control of the current run lives in a ``ContextVar`` set in the child's task, so
tasks the child spawns inherit it and :func:`shutdown_grace` needs no argument.  That is also
how a nested :class:`~actors.Supervisor`, whose ``run`` takes only ``task_status``, bounds its
own orderly stop by the shutdown its parent gives it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import final

import trio

_current_stop: ContextVar[StopControl] = ContextVar("actors_current_stop")


@final
class StopControl:
    """The stop machinery of one run of one child (internal to the supervisor)."""

    __slots__ = ("_deadline", "_graces", "requested", "scope")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.requested = False
        self._deadline = math.inf
        self._graces: set[trio.CancelScope] = set()

    def install(self) -> None:
        """Make this the control that :func:`shutdown_grace` uses in the current task."""
        _current_stop.set(self)

    def request(self, shutdown: float | None) -> None:
        """Ask the run to stop; grace blocks expire ``shutdown`` seconds from now.

        A second request can only bring the deadline closer (``request(0)`` is a kill).
        """
        self.requested = True
        deadline = math.inf if shutdown is None else trio.current_time() + shutdown
        if deadline < self._deadline:
            self._deadline = deadline
            for grace in self._graces:
                grace.deadline = min(grace.deadline, deadline)
        self.scope.cancel()

    @contextmanager
    def grace(self) -> Iterator[trio.CancelScope]:
        scope = trio.CancelScope(shield=True, deadline=self._deadline)
        self._graces.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._graces.discard(scope)


@contextmanager
def shutdown_grace() -> Iterator[trio.CancelScope]:
    """Shield a block from the supervisor's stop request, for at most the child's shutdown time.

    Use it around cleanup that must await when the child is stopped::

        try:
            async for item in inbox:
                ...
        finally:
            with shutdown_grace():
                await flush()

    Before any stop request the block runs unhindered.  Once the supervisor asks the child to
    stop, the block may run for ``ChildSpec.shutdown`` seconds counted from that request, and
    is cancelled after that.  Outside a supervised child (no supervisor set the policy) the
    block is shielded without a deadline, so bound it yourself if it can hang.

    Yields:
        The shielded ``trio.CancelScope`` (its ``cancelled_caught`` tells whether the grace ran out).
    """
    control = _current_stop.get(None)
    if control is None:
        with trio.CancelScope(shield=True) as scope:
            yield scope
    else:
        with control.grace() as scope:
            yield scope
