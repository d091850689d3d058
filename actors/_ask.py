"""Request and reply between actors: :func:`ask` and the one-shot :class:`Reply`.

The asker builds its request around a fresh :class:`Reply` (a one-slot channel only it reads),
sends the request into the actor's mailbox, and waits for the reply.  The actor answers with
``request.reply.send(value)``, which never blocks: the slot is free by construction, and an
asker that has stopped waiting just makes ``send`` return ``False``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar, final

import trio

from actors._errors import AskTimeout, NoReply

Q = TypeVar("Q")
R = TypeVar("R")


@final
class Reply(Generic[R]):
    """The handle an actor uses to answer one request, once.

    If the actor cannot answer (it is about to raise, say), it closes the handle, or uses it in
    a ``with`` block, and the asker gets :class:`~actors.NoReply` at once instead of waiting
    for its timeout.
    """

    __slots__ = ("_send",)

    def __init__(self, send: trio.MemorySendChannel[R]) -> None:
        self._send = send

    def send(self, value: R) -> bool:
        """Deliver the reply and close the handle; never blocks.

        Returns:
            ``True`` if the reply was delivered, ``False`` if the asker already gave up
            (timed out or was cancelled).

        Raises:
            trio.ClosedResourceError: A reply was already sent, or the handle was closed.
        """
        try:
            self._send.send_nowait(value)
        except trio.BrokenResourceError:
            return False
        finally:
            self._send.close()
        return True

    def close(self) -> None:
        """Give up on replying (idempotent); a waiting asker gets :class:`~actors.NoReply`."""
        self._send.close()

    def __enter__(self) -> Reply[R]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


async def ask(
    channel: trio.abc.SendChannel[Q],
    make_request: Callable[[Reply[R]], Q],
    *,
    # trio's guide prefers the caller's cancel scope to `timeout=`; a request/reply, though,
    # has no sensible unbounded default, so the bound is part of the call and its error type.
    timeout: float,  # noqa: ASYNC109
) -> R:
    """Send a request carrying a one-shot :class:`Reply` and wait for the answer.

    Example::

        @attrs.frozen
        class GetCount:
            reply: Reply[int]

        count = await ask(counter_inbox, GetCount, timeout=1.0)

    Args:
        channel: Where the actor receives requests (its mailbox, or a clone of it).
        make_request: Builds the request from the reply handle, e.g. a request class whose one
            field is the reply, or ``lambda reply: Get(key, reply=reply)``.
        timeout: Seconds allowed for both sending the request (the mailbox may be full) and
            receiving the reply.

    Returns:
        The value the actor passed to ``reply.send``.

    Raises:
        AskTimeout: No reply within ``timeout``.  The actor may still process the request;
            its ``reply.send`` then returns ``False``.
        NoReply: The actor closed the reply handle without replying.
        trio.BrokenResourceError: Nobody receives on ``channel`` any more.
    """
    reply_send, reply_receive = trio.open_memory_channel[R](1)
    with reply_receive:
        request = make_request(Reply(reply_send))
        with trio.move_on_after(timeout):
            await channel.send(request)
            try:
                return await reply_receive.receive()
            except trio.EndOfChannel:
                raise NoReply("the actor closed the reply without replying") from None
        raise AskTimeout(timeout)
