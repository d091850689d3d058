"""Two apps and a server on 127.0.0.1, over WebSocket and over long-polling.

* writes on A appear on B;
* writes made on A while the server is down reach B after it returns;
* A, killed with SIGKILL while offline (a subprocess), reopened and reconnected: nothing is
  lost and nothing is duplicated;
* after syncing 1,000 operations the diagnostics counters are exact and rtt > 0.

Every wait is bounded by ``trio.fail_after``; reconnect delays are shortened so that the
tests stay fast (the exact table is tested under a mock clock in tests/sync).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import kora
import kora.sync
from kora.server import (
    AuthContext,
    MemoryServerStore,
    ServerLimits,
    SyncServer,
    TokenAuthProvider,
    open_server,
)
from kora.sync import Frame, Transport
from kora.sync.websocket import open_websocket_transport

SCHEMA = kora.define_schema(
    version=1, collections={"todos": {"title": kora.string(), "done": kora.boolean(default=False)}}
)
LIMITS = ServerLimits(ping_interval=None, shutdown_timeout=3.0)
TRANSPORTS = ["websocket", "long-polling"]
FAST = {"reconnect_interval": 0.05, "max_reconnect_interval": 0.2, "poll_interval": 0.02}


def options(server_url: str, transport: Any, **extra: Any) -> kora.SyncOptions:
    return kora.SyncOptions(url=server_url, transport=transport, **{**FAST, **extra})


@asynccontextmanager
async def running_server(
    store: MemoryServerStore, port: int = 0, **kwargs: Any
) -> AsyncIterator[SyncServer]:
    async with open_server(
        store=store, host="127.0.0.1", port=port, limits=LIMITS, **kwargs
    ) as server:
        yield server


async def titles(app: kora.App) -> list[str]:
    return sorted(str(record.fields["title"]) for record in await app.collection("todos").all())


async def wait_for_titles(app: kora.App, expected: list[str]) -> None:
    with trio.fail_after(15):
        while await titles(app) != sorted(expected):
            await trio.sleep(0.01)


@pytest.mark.parametrize("wire_format", ["json", "kora-pb1"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_writes_on_a_appear_on_b(transport: str, wire_format: str) -> None:
    async with MemoryServerStore() as store, running_server(store) as server:
        url = server.url
        sync = options(url, transport, wire_format=wire_format)
        async with (
            kora.open_app(SCHEMA, path=None, sync=sync) as a,
            kora.open_app(SCHEMA, path=None, sync=sync) as b,
        ):
            assert a.sync is not None
            assert b.sync is not None
            await a.sync.connect()
            await b.sync.connect()
            await a.collection("todos").insert({"title": "milk"})
            with trio.fail_after(15):
                await a.sync.wait_synced()
            await wait_for_titles(b, ["milk"])
            await b.collection("todos").insert({"title": "bread"})
            await wait_for_titles(a, ["bread", "milk"])
            with trio.fail_after(15):
                await a.sync.wait_synced()
            assert a.sync.status == "synced"
            assert a.sync.pending_operations == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_offline_writes_reach_b_after_the_server_returns(transport: str) -> None:
    async with MemoryServerStore() as store, running_server(store) as server:
        port, url = server.port, server.url
        async with (
            kora.open_app(SCHEMA, path=None, sync=options(url, transport)) as a,
            kora.open_app(SCHEMA, path=None, sync=options(url, transport)) as b,
        ):
            assert a.sync is not None
            assert b.sync is not None
            await a.sync.connect()
            await b.sync.connect()
            await a.collection("todos").insert({"title": "before"})
            await wait_for_titles(b, ["before"])
            disconnected = trio.Event()
            a.events.on("sync:disconnected", lambda event: disconnected.set())
            server.shutdown()
            with trio.fail_after(15):
                await disconnected.wait()
                while a.sync.status != "offline":
                    await trio.sleep(0.01)
            for n in range(5):
                await a.collection("todos").insert({"title": f"offline-{n}"})
            assert a.sync.pending_operations == 5
            async with running_server(store, port=port):
                with trio.fail_after(15):
                    await a.sync.wait_synced()
                await wait_for_titles(b, ["before", *(f"offline-{n}" for n in range(5))])
            assert (await a.sync.diagnostics()).reconnects >= 1


CHILD = textwrap.dedent(
    """
    import json, sys, trio, kora

    SCHEMA = kora.define_schema(
        version=1,
        collections={"todos": {"title": kora.string(), "done": kora.boolean(default=False)}},
    )

    async def main(path, url, transport, count):
        sync = kora.SyncOptions(url=url, transport=transport, reconnect_interval=0.05,
                                max_reconnect_interval=0.2)
        async with kora.open_app(SCHEMA, path=path, sync=sync) as app:
            await app.sync.connect()
            for n in range(count):
                record = await app.collection("todos").insert({"title": f"killed-{n}"})
                print(json.dumps({"id": record.id}), flush=True)
            print(json.dumps({"pending": await app.pending_operations()}), flush=True)
            await trio.sleep_forever()

    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
    """
)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_sigkill_while_offline_loses_and_duplicates_nothing(
    transport: str, tmp_path: Path
) -> None:
    count = 20
    db = tmp_path / "a.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    async with MemoryServerStore() as store:
        async with running_server(store) as server:
            port, url = server.port, server.url
        # The server is down: the child writes offline, then dies without any cleanup.
        child = await trio.lowlevel.open_process(
            [sys.executable, str(script), str(db), url, transport, str(count)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert child.stdout is not None
        lines: list[dict[str, Any]] = []
        buffer = b""
        with trio.fail_after(60):
            while not lines or "pending" not in lines[-1]:
                chunk = await child.stdout.receive_some()
                assert chunk, "the child exited early"
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                lines.extend(json.loads(line) for line in complete if line)
        child.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            await child.wait()
        assert child.returncode == -signal.SIGKILL
        written = [line["id"] for line in lines if "id" in line]
        assert len(written) == count
        assert lines[-1]["pending"] == count
        async with running_server(store, port=port):
            async with (
                kora.open_app(SCHEMA, path=db, sync=options(url, transport)) as a,
                kora.open_app(SCHEMA, path=None, sync=options(url, transport)) as b,
            ):
                assert a.sync is not None
                assert b.sync is not None
                assert await a.pending_operations() == count
                await a.sync.connect()
                await b.sync.connect()
                with trio.fail_after(15):
                    await a.sync.wait_synced()
                await wait_for_titles(b, [f"killed-{n}" for n in range(count)])
                records = await b.collection("todos").all()
                assert sorted(r.id for r in records) == sorted(written)
                with trio.fail_after(15):
                    await b.sync.wait_synced()
            assert await store.operation_count() == count


class CountingTransport:
    """Wraps a transport and counts what really crosses it (the reference for exactness)."""

    def __init__(self, inner: Transport, counts: dict[str, int]) -> None:
        self._inner = inner
        self._counts = counts

    async def send(self, frame: Frame) -> None:
        await self._inner.send(frame)
        self._counts["frames_sent"] += 1
        self._counts["bytes_sent"] += len(frame.encode() if isinstance(frame, str) else frame)

    async def receive(self) -> Frame:
        frame = await self._inner.receive()
        self._counts["frames_received"] += 1
        self._counts["bytes_received"] += len(frame.encode() if isinstance(frame, str) else frame)
        return frame

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_diagnostics_after_a_thousand_operations() -> None:
    count, batch_size = 1000, 100
    counts = dict.fromkeys(("frames_sent", "bytes_sent", "frames_received", "bytes_received"), 0)
    async with MemoryServerStore() as store, running_server(store) as server:

        @asynccontextmanager
        async def counting() -> AsyncIterator[Transport]:
            async with open_websocket_transport(server.url) as inner:
                yield CountingTransport(inner, counts)

        async with kora.open_app(
            SCHEMA, path=None, sync=options(server.url, counting, batch_size=batch_size)
        ) as a:
            assert a.sync is not None
            async with a.transaction() as tx:
                for n in range(count):
                    await tx.collection("todos").insert({"title": f"t{n}"})
            await a.sync.connect()
            with trio.fail_after(30):
                await a.sync.wait_synced()
                live = await a.sync.diagnostics()
                # Synced can be reached while our last acknowledgment is still on its way
                # to the transport; once disconnected, every frame is sent and counted.
                await a.sync.disconnect()
            diagnostics = await a.sync.diagnostics()
        assert await store.operation_count() == count
    assert diagnostics.operations_sent == count
    assert diagnostics.operations_received == 0
    assert diagnostics.batches_acknowledged == count // batch_size
    assert diagnostics.frames_sent == counts["frames_sent"]
    assert diagnostics.bytes_sent == counts["bytes_sent"]
    assert diagnostics.frames_received == counts["frames_received"]
    assert diagnostics.bytes_received == counts["bytes_received"]
    assert diagnostics.rtt_samples == count // batch_size
    assert diagnostics.rtt_ms > 0
    assert diagnostics.rtt_p95_ms > 0
    assert diagnostics.effective_bandwidth is not None
    assert diagnostics.effective_bandwidth > 0
    assert diagnostics.connections == 1
    assert diagnostics.reconnects == 0
    assert live.connected
    assert live.uptime > 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_auth_per_attempt_and_rejection_against_the_server(transport: str) -> None:
    async def validate(token: str) -> AuthContext | None:
        return AuthContext(user_id="alice") if token == "good" else None

    tokens = ["bad"]
    calls = 0

    async def auth() -> str:
        nonlocal calls
        calls += 1
        return tokens[-1]

    async with (
        MemoryServerStore() as store,
        running_server(store, auth=TokenAuthProvider(validate=validate)) as server,
        kora.open_app(SCHEMA, path=None, sync=options(server.url, transport, auth=auth)) as a,
    ):
        assert a.sync is not None
        failed = trio.Event()
        a.events.on("sync:auth-failed", lambda event: failed.set())
        await a.sync.connect()
        with trio.fail_after(15):
            await failed.wait()
        await trio.sleep(0.5)  # ten times the retry interval: no retry happens
        assert calls == 1
        assert a.sync.status == "error"
        with pytest.raises(kora.sync.AuthFailedError):
            await a.sync.wait_synced()
        tokens.append("good")
        await a.sync.connect()
        with trio.fail_after(15):
            await a.sync.wait_synced()
        assert calls == 2
        assert (await a.sync.diagnostics()).connection_attempts == 2
