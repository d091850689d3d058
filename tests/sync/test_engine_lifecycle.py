"""Connection lifecycle under virtual time: backoff table, auth, schema, disconnect cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing
from sync_fakes import FakeServer, HarnessFactory, server_message_id

from kora.protocol.messages import Handshake, HandshakeResponse
from kora.sync import MemoryNetwork, SyncStatus, Transport, TransportClosed


def count_tasks() -> int:
    """Every task of this trio run (a walk of the task tree from the root)."""
    stack = [trio.lowlevel.current_root_task()]
    count = 0
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


class RefusingNetwork:
    """A transport factory that records when it was called and always fails."""

    def __init__(self) -> None:
        self.times: list[float] = []

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[Transport]:
        self.times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        raise TransportClosed("connection refused")
        yield  # pragma: no cover


async def test_default_reconnect_delays_are_the_documented_table(
    harness: HarnessFactory, autojump_clock: trio.testing.MockClock
) -> None:
    refusing = RefusingNetwork()
    async with harness(transport=refusing) as h:
        start = trio.current_time()
        await h.engine.connect()
        while len(refusing.times) < 9:
            await trio.sleep(1)
        delays = [
            round(b - a, 6) for a, b in zip([start, *refusing.times], refusing.times, strict=False)
        ]
        assert delays[:8] == [0, 1, 2, 4, 8, 16, 30, 30]
        assert h.engine.status is SyncStatus.OFFLINE
        assert [p["delay"] for p in h.of("sync:reconnecting")][:7] == [1, 2, 4, 8, 16, 30, 30]
        diagnostics = await h.engine.diagnostics()
        assert diagnostics.connection_attempts == len(refusing.times)
        await h.engine.disconnect()
        attempts = len(refusing.times)
        await trio.sleep(100)
        assert len(refusing.times) == attempts


async def test_custom_intervals(
    harness: HarnessFactory, autojump_clock: trio.testing.MockClock
) -> None:
    refusing = RefusingNetwork()
    async with harness(transport=refusing, reconnect_interval=0.5, max_reconnect_interval=3.0) as h:
        start = trio.current_time()
        await h.engine.connect()
        while len(refusing.times) < 6:
            await trio.sleep(0.25)
        delays = [
            round(b - a, 6) for a, b in zip([start, *refusing.times], refusing.times, strict=False)
        ]
        assert delays[:6] == [0, 0.5, 1.0, 2.0, 3.0, 3.0]


async def test_auto_reconnect_off_makes_one_attempt(
    harness: HarnessFactory, autojump_clock: trio.testing.MockClock
) -> None:
    refusing = RefusingNetwork()
    async with harness(transport=refusing, auto_reconnect=False) as h:
        await h.engine.connect()
        await trio.sleep(100)
        assert len(refusing.times) == 1
        assert h.engine.status is SyncStatus.OFFLINE
        await h.engine.connect()  # connect() tries again
        await trio.sleep(1)
        assert len(refusing.times) == 2


async def test_backoff_resets_after_a_successful_handshake(
    harness: HarnessFactory, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness() as h:
        server = await h.streaming()
        with trio.fail_after(5):
            await h.engine.wait_synced()
        await trio.sleep(10)
        dropped_at = trio.current_time()
        await server.transport.aclose()
        again = FakeServer(await h.network.accept())
        assert trio.current_time() == dropped_at  # attempt 1 again: immediate
        assert h.of("sync:disconnected")[0]["reason"] == "memory transport closed"
        await again.accept(await again.expect(Handshake))
        await trio.testing.wait_all_tasks_blocked()
        assert len(h.of("sync:connected")) == 2


async def test_auth_is_called_on_every_attempt(
    harness: HarnessFactory, autojump_clock: trio.testing.MockClock
) -> None:
    tokens: list[str] = []

    async def auth() -> str:
        tokens.append(f"token-{len(tokens) + 1}")
        return tokens[-1]

    network = MemoryNetwork()
    async with harness(network=network, auth=auth) as h:
        await h.engine.connect()
        sent: list[str | None] = []
        for _ in range(3):
            server = FakeServer(await network.accept())
            handshake = await server.expect(Handshake)
            sent.append(handshake.auth_token)
            await server.transport.aclose()  # drop before answering: another attempt
        assert sent == ["token-1", "token-2", "token-3"]
        await trio.testing.wait_all_tasks_blocked()
        assert len(tokens) == network.connections


async def test_auth_rejection_stops_retries_until_connect(
    harness: HarnessFactory, autojump_clock: trio.testing.MockClock
) -> None:
    calls = 0

    async def auth() -> str:
        nonlocal calls
        calls += 1
        return "bad"

    async with harness(auth=auth) as h:
        await h.engine.connect()
        server = FakeServer(await h.network.accept())
        await server.expect(Handshake)
        await server.error("AUTH_FAILED", "Authentication failed")
        await server.transport.aclose()
        await trio.sleep(600)
        assert h.network.connections == 1
        assert calls == 1
        assert h.engine.status is SyncStatus.ERROR
        assert h.engine.status_info.auth_failed
        assert h.of("sync:auth-failed") == [{"reason": "Authentication failed"}]
        await h.engine.connect()
        server = FakeServer(await h.network.accept())
        await server.expect(Handshake)
        assert calls == 2
        assert h.engine.status is SyncStatus.OFFLINE


async def test_schema_mismatch_is_an_error_without_retries(
    harness: HarnessFactory, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(schema_version=3) as h:
        await h.engine.connect()
        server = FakeServer(await h.network.accept())
        handshake = await server.expect(Handshake)
        assert handshake.schema_version == 3
        await server.send(
            HandshakeResponse(
                message_id=server_message_id(),
                node_id="srv",
                version_vector={},
                schema_version=1,
                accepted=False,
                reject_reason="SCHEMA_MISMATCH: client schema version 3 not in supported range [1, 2]",
                supported_schema_min=1,
                supported_schema_max=2,
            )
        )
        await trio.sleep(600)
        assert h.network.connections == 1
        assert h.engine.status is SyncStatus.ERROR
        assert (h.engine.status_info.error or "").startswith("SCHEMA_MISMATCH")
        (mismatch,) = h.of("sync:schema-mismatch")
        assert (mismatch["client_schema_version"], mismatch["supported_max"]) == (3, 2)


async def test_no_task_of_a_connection_survives_disconnect(harness: HarnessFactory) -> None:
    async with harness() as h:
        await trio.testing.wait_all_tasks_blocked()
        baseline = count_tasks()
        await h.streaming()
        with trio.fail_after(5):
            await h.engine.wait_synced()
        assert count_tasks() > baseline + 3  # the connection scope and its three actors
        (transport,) = h.network.open_connections
        await h.engine.disconnect()
        assert count_tasks() == baseline
        assert transport.closed
        assert not h.network.open_connections
        assert h.engine.status is SyncStatus.OFFLINE
        assert h.of("sync:disconnected")[-1]["reason"] == "disconnected by the app"
        # Local writes keep queueing while offline.
        await h.write("offline")
        await trio.testing.wait_all_tasks_blocked()
        assert h.engine.pending_operations == 1
        assert (await h.engine.diagnostics()).connected is False


async def test_a_dropped_connection_leaves_no_task_behind(
    harness: HarnessFactory, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(auto_reconnect=False) as h:
        await trio.testing.wait_all_tasks_blocked()
        baseline = count_tasks()
        await h.engine.connect()
        server = FakeServer(await h.network.accept())
        await server.accept(await server.expect(Handshake))
        await server.transport.aclose()
        await trio.sleep(1)
        assert count_tasks() == baseline
        assert h.engine.status is SyncStatus.OFFLINE


async def test_a_restarted_queue_actor_gets_a_fresh_connection(harness: HarnessFactory) -> None:
    async with harness() as h:
        store = h.store
        real_acknowledge = store.acknowledge
        failures = [RuntimeError("disk full")]

        async def acknowledge_failing_once(op_ids: object, **kwargs: bool) -> int:
            if failures:
                raise failures.pop()
            return await real_acknowledge(op_ids, **kwargs)  # type: ignore[arg-type]

        store.acknowledge = acknowledge_failing_once  # type: ignore[method-assign]
        op = await h.write("survives")
        await h.engine.connect()
        server = FakeServer(await h.network.accept())
        await server.accept(await server.expect(Handshake))
        await server.ack(await server.receive_batch())  # the queue actor crashes on this ack
        again = FakeServer(await h.network.accept())
        await again.accept(await again.expect(Handshake))
        resent = await again.receive_batch()
        assert [o.id for o in resent.operations] == [op.id]
        await again.ack(resent)
        with trio.fail_after(5):
            await h.engine.wait_synced()
        assert await store.pending_count() == 0
        assert h.of("sync:disconnected")[0]["reason"] == "the outbound queue restarted"
