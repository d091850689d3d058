"""What the engine's actors send each other (internal value types).

The engine-level mailboxes:

* the **outbound** mailbox of :class:`~kora.sync.outbound.OutboundQueueActor`:
  :class:`Attached`, :class:`Detached`, :class:`BatchAcked`, :class:`Streaming`,
  :class:`QueueChanged`, :class:`RetryLater`;
* the **commands** mailbox of :class:`~kora.sync.scheduler.ReconnectScheduler`:
  :class:`Connect`, :class:`Disconnect`, :class:`DropConnection`;
* the **metrics** mailbox of :class:`~kora.sync.diagnostics.DiagnosticsActor`:
  :data:`~kora.sync.diagnostics.MetricEvent` and :class:`~kora.sync.diagnostics.DiagnosticsQuery`.

A :class:`Link` is one connection as the actors outside its scope see it: its protocol
session and the mailbox of frames to send.  Every message about a connection carries the
link id, so a message about a connection that has already ended is recognised and dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeAlias, TypeVar

import attrs
import trio

from actors import Mailbox, Reply
from kora.core.version_vector import VersionVector
from kora.protocol.client import ClientSession
from kora.protocol.messages import ScopeMap
from kora.sync.transport import Frame


@attrs.frozen(eq=False)
class Link:
    """One connection attempt's protocol session and outgoing frames."""

    id: int
    session: ClientSession
    frames_out: Mailbox[Frame]


# ----------------------------------------------------------------------- outbound mailbox


@attrs.frozen(eq=False)
class Attached:
    """A handshake was accepted on ``link``; ``server_vector`` is the server's vector.

    ``scope`` is the scope the server granted (``acceptedScope``, None: unscoped): local
    operations outside it are not sent.  ``delta_sent`` is set once the first batches of
    the handshake delta are on their way, so that the handshake actor lets the receiver
    start only then: our delta goes out before we answer the server's stream, in the order
    of the Kora.js client.
    """

    link: Link
    server_vector: VersionVector
    scope: ScopeMap | None = None
    delta_sent: trio.Event = attrs.field(factory=trio.Event)


@attrs.frozen
class Detached:
    """The connection of ``link_id`` is over."""

    link_id: int


@attrs.frozen
class BatchAcked:
    """The server acknowledged our batch ``message_id`` at ``received_at`` (trio time)."""

    link_id: int
    message_id: str
    received_at: float


@attrs.frozen
class Streaming:
    """Both directions of the post-handshake exchange of ``link_id`` are complete."""

    link_id: int


@attrs.frozen
class QueueChanged:
    """The outbound queue changed: a local write (the queue actor learns of its operations
    from the store's queue listener), or ``removed`` left it (a rejection)."""

    removed: tuple[str, ...] = ()


@attrs.frozen
class RetryLater:
    """The server refused ``operation_id``, sent on ``link_id``, for now
    (``operation-rejected`` with ``retriable: true``): it stays queued, the acknowledgment of
    its batch does not dequeue it, and it is sent again after a delay."""

    link_id: int
    operation_id: str


OutboundMessage: TypeAlias = (
    Attached | Detached | BatchAcked | Streaming | QueueChanged | RetryLater
)

# ----------------------------------------------------------------------- commands mailbox


@attrs.frozen
class Connect:
    reply: Reply[None]


@attrs.frozen
class Disconnect:
    reply: Reply[None]


@attrs.frozen
class DropConnection:
    """End the current connection (if any) and reconnect at once, e.g. because the
    outbound queue actor restarted and lost track of it."""

    reason: str


Command: TypeAlias = Connect | Disconnect | DropConnection

_T = TypeVar("_T")


async def post(channel: trio.MemorySendChannel[_T], message: _T) -> None:
    """Send ``message``, waiting only when ``channel`` is full.

    ``channel.send`` always yields to the scheduler after a successful send, so every hop
    between actors would cost a scheduling round on the latency path.  Posting wakes the
    receiver just the same (and keeps the order: the message is in the buffer on return);
    the caller reaches a checkpoint soon anyway (its next receive or store call).
    """
    try:
        channel.send_nowait(message)
    except trio.WouldBlock:
        await channel.send(message)


#: ``emit(name, payload)``: publish an app event (``app.events.emit``).
EventEmitter: TypeAlias = Callable[[str, Mapping[str, object]], object]
