"""ask(): a request with a one-shot reply, bounded by a timeout."""

from __future__ import annotations

import attrs
import pytest
import trio

from actors import AskTimeout, ChildSpec, Mailbox, NoReply, Reply, Supervisor, ask


@attrs.frozen
class Get:
    key: str
    reply: Reply[int]


class Store:
    """Answers Get requests; "slow" takes 10 s, "none" closes the reply, "late" after 3 s."""

    def __init__(
        self, inbox: trio.MemoryReceiveChannel[Get], late: list[bool] | None = None
    ) -> None:
        self._inbox = inbox
        self._late = late if late is not None else []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for request in self._inbox:
            if request.key == "none":
                request.reply.close()
            elif request.key == "late":
                await trio.sleep(3)
                self._late.append(request.reply.send(0))
            else:
                request.reply.send(len(request.key))


def store(inbox: Mailbox[Get], late: list[bool] | None = None) -> ChildSpec:
    return ChildSpec(id="store", start=lambda wiring: Store(wiring.receiver(inbox), late))


async def test_ask_returns_the_reply(autojump_clock: object) -> None:
    with Mailbox[Get](1) as inbox:
        supervisor = Supervisor([store(inbox)])
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            with inbox.sender() as send:
                assert await ask(send, lambda reply: Get("four", reply), timeout=1) == 4
            nursery.cancel_scope.cancel()


async def test_ask_times_out_at_exactly_its_timeout_and_the_late_reply_is_refused(
    autojump_clock: object,
) -> None:
    late: list[bool] = []
    with Mailbox[Get](1) as inbox:
        supervisor = Supervisor([store(inbox, late)])
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            with inbox.sender() as send:
                with pytest.raises(AskTimeout) as caught:
                    await ask(send, lambda reply: Get("late", reply), timeout=1.5)
                assert trio.current_time() == 1.5
                assert caught.value.timeout == 1.5
                assert isinstance(caught.value, TimeoutError)
                await trio.sleep(2)
            assert late == [False]  # the replier learns that nobody was waiting
            nursery.cancel_scope.cancel()


async def test_ask_times_out_while_the_mailbox_is_full(autojump_clock: object) -> None:
    send, receive = trio.open_memory_channel[Get](0)  # nobody receives
    with send, receive, pytest.raises(AskTimeout):
        await ask(send, lambda reply: Get("x", reply), timeout=2)
    assert trio.current_time() == 2.0


async def test_a_closed_reply_fails_the_ask_at_once(autojump_clock: object) -> None:
    with Mailbox[Get](1) as inbox:
        supervisor = Supervisor([store(inbox)])
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            with inbox.sender() as send, pytest.raises(NoReply):
                await ask(send, lambda reply: Get("none", reply), timeout=5)
            assert trio.current_time() == 0.0
            nursery.cancel_scope.cancel()


async def test_a_reply_is_sent_at_most_once() -> None:
    send, receive = trio.open_memory_channel[int](1)
    reply = Reply(send)
    assert reply.send(1) is True
    with pytest.raises(trio.ClosedResourceError):
        reply.send(2)
    assert receive.receive_nowait() == 1


async def test_a_reply_used_as_a_context_manager_closes_on_error() -> None:
    send, receive = trio.open_memory_channel[int](1)
    with pytest.raises(RuntimeError), Reply(send):
        raise RuntimeError("handler failed")
    with pytest.raises(trio.EndOfChannel):
        receive.receive_nowait()


async def test_asking_a_channel_nobody_reads_any_more_raises_broken() -> None:
    send, receive = trio.open_memory_channel[Get](1)
    receive.close()
    with send, pytest.raises(trio.BrokenResourceError):
        await ask(send, lambda reply: Get("x", reply), timeout=1)
