"""What a supervisor is told about its children: strategies, restart types and child specs."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Final, Literal, Protocol, TypeAlias, runtime_checkable

import attrs
import trio

from actors._mailbox import Wiring


class Strategy(enum.Enum):
    """Which children a supervisor restarts when one of them must be restarted (OTP)."""

    ONE_FOR_ONE = "one_for_one"
    """Restart only the child that ended."""
    ONE_FOR_ALL = "one_for_all"
    """Stop all the other children (in reverse order), then restart all of them in order."""
    REST_FOR_ONE = "rest_for_one"
    """Stop the children started after the one that ended, then restart it and them in order."""


ONE_FOR_ONE: Final = Strategy.ONE_FOR_ONE
ONE_FOR_ALL: Final = Strategy.ONE_FOR_ALL
REST_FOR_ONE: Final = Strategy.REST_FOR_ONE


class Restart(enum.Enum):
    """When a child that ended by itself is restarted (OTP).  A stopped child never is."""

    PERMANENT = "permanent"
    """Always: after a crash and after a normal return."""
    TRANSIENT = "transient"
    """Only after a crash (an exception); a normal return ends it for good."""
    TEMPORARY = "temporary"
    """Never; a temporary child that ends, or is stopped by a group restart, is gone."""


PERMANENT: Final = Restart.PERMANENT
TRANSIENT: Final = Restart.TRANSIENT
TEMPORARY: Final = Restart.TEMPORARY


class Shutdown(enum.Enum):
    """Marker for the OTP default shutdown of a child."""

    DEFAULT = "default"
    """:data:`WORKER_SHUTDOWN` seconds for a worker, infinity (``None``) for a Supervisor."""


#: The OTP default grace, in seconds, that a worker gets to finish its cleanup when stopped.
WORKER_SHUTDOWN: Final = 5.0


@runtime_checkable
class Actor(Protocol):
    """An object whose ``run`` is a supervised task.

    ``run`` calls ``task_status.started()`` once it is ready to serve (the supervisor starts
    the next child only then) and talks to others only through channel ends it was given.
    """

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until done; call ``task_status.started()`` when ready."""


class RunFunction(Protocol):
    """An async callable that is a supervised task, like :meth:`Actor.run` without the object."""

    def __call__(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> Awaitable[None]:
        """Run until done; call ``task_status.started()`` when ready."""


#: What ``ChildSpec.start`` returns: an actor object or an async callable.
Startable: TypeAlias = Actor | RunFunction


_ShutdownValue: TypeAlias = float | Literal[Shutdown.DEFAULT] | None


def _check_shutdown(
    instance: object, attribute: attrs.Attribute[_ShutdownValue], value: _ShutdownValue
) -> None:
    if value is Shutdown.DEFAULT or value is None:
        return
    # `not value >= 0` also rejects NaN.
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"shutdown is seconds >= 0, None or Shutdown.DEFAULT, not {value!r}")


def _check_id(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"a child id is a non-empty string, not {value!r}")


@attrs.frozen(kw_only=True)
class ChildSpec:
    """How to start one child and what to do when it ends.

    Attributes:
        id: Unique among the supervisor's children; appears in events and errors.
        start: Called once per run (the first start and every restart) with that run's
            :class:`Wiring`; returns a fresh actor (an object with ``run``, or an async
            callable taking ``task_status``).  Take channel ends from the wiring
            (``wiring.receiver(mailbox)``) so each run gets its own clones.
        restart: :class:`Restart` type; ``PERMANENT`` by default.
        shutdown: Seconds the child's :func:`~actors.shutdown_grace` blocks may run after a
            stop request; ``0`` cancels them at once, ``None`` never does.  By default
            :data:`WORKER_SHUTDOWN` (5 s) for a worker and ``None`` when ``start`` returns a
            :class:`~actors.Supervisor` (OTP's defaults).
    """

    id: str = attrs.field(validator=_check_id)
    start: Callable[[Wiring], Startable]
    restart: Restart = attrs.field(
        default=Restart.PERMANENT, validator=attrs.validators.instance_of(Restart)
    )
    shutdown: _ShutdownValue = attrs.field(default=Shutdown.DEFAULT, validator=_check_shutdown)
