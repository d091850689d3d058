"""OTP-style supervision on trio nurseries (general purpose; imports nothing from kora).

An actor is an object with ``async def run(self, *, task_status=trio.TASK_STATUS_IGNORED)``
(or such an async callable) that talks to others only through bounded channel ends it was
given.  A :class:`Supervisor` starts its children in order, restarts them by OTP's rules,
gives up (raising :class:`SupervisorGaveUp`) when restarts come too fast, and stops them in
reverse order.  See ``docs/supervision.md`` for the model.
"""

from actors._ask import Reply as Reply
from actors._ask import ask as ask
from actors._errors import ActorsError as ActorsError
from actors._errors import AskTimeout as AskTimeout
from actors._errors import ChildStartFailed as ChildStartFailed
from actors._errors import NoReply as NoReply
from actors._errors import SupervisorGaveUp as SupervisorGaveUp
from actors._events import ChildCrashed as ChildCrashed
from actors._events import ChildExited as ChildExited
from actors._events import ChildRestarted as ChildRestarted
from actors._events import ChildStarted as ChildStarted
from actors._events import ChildStopped as ChildStopped
from actors._events import GaveUp as GaveUp
from actors._events import LifecycleEvent as LifecycleEvent
from actors._mailbox import Mailbox as Mailbox
from actors._mailbox import Wiring as Wiring
from actors._shutdown import shutdown_grace as shutdown_grace
from actors._spec import ONE_FOR_ALL as ONE_FOR_ALL
from actors._spec import ONE_FOR_ONE as ONE_FOR_ONE
from actors._spec import PERMANENT as PERMANENT
from actors._spec import REST_FOR_ONE as REST_FOR_ONE
from actors._spec import TEMPORARY as TEMPORARY
from actors._spec import TRANSIENT as TRANSIENT
from actors._spec import WORKER_SHUTDOWN as WORKER_SHUTDOWN
from actors._spec import Actor as Actor
from actors._spec import ChildSpec as ChildSpec
from actors._spec import Restart as Restart
from actors._spec import RunFunction as RunFunction
from actors._spec import Shutdown as Shutdown
from actors._spec import Startable as Startable
from actors._spec import Strategy as Strategy
from actors._supervisor import ChildInfo as ChildInfo
from actors._supervisor import ChildState as ChildState
from actors._supervisor import Supervisor as Supervisor
from actors._supervisor import SupervisorStatistics as SupervisorStatistics

__all__ = [
    "ONE_FOR_ALL",
    "ONE_FOR_ONE",
    "PERMANENT",
    "REST_FOR_ONE",
    "TEMPORARY",
    "TRANSIENT",
    "WORKER_SHUTDOWN",
    "Actor",
    "ActorsError",
    "AskTimeout",
    "ChildCrashed",
    "ChildExited",
    "ChildInfo",
    "ChildRestarted",
    "ChildSpec",
    "ChildStartFailed",
    "ChildStarted",
    "ChildState",
    "ChildStopped",
    "GaveUp",
    "LifecycleEvent",
    "Mailbox",
    "NoReply",
    "Reply",
    "Restart",
    "RunFunction",
    "Shutdown",
    "Startable",
    "Strategy",
    "Supervisor",
    "SupervisorGaveUp",
    "SupervisorStatistics",
    "Wiring",
    "ask",
    "shutdown_grace",
]
