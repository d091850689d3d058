"""The pytest plugin's fixtures, and that loading the plugin stays cheap."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import pytest
import trio

import kora
from kora.server import SyncServer
from kora.testing import partition, wait_converged
from kora.testing.loop_server import LoopServer

SCHEMA = kora.define_schema(version=1, collections={"todos": {"title": kora.string()}})


def test_loading_the_plugin_imports_nothing_heavy() -> None:
    code = (
        "import sys, kora.testing.plugin\n"
        "heavy = [m for m in ('trio_websocket', 'hypercorn', 'httpx', 'kora.server', "
        "'kora.sync', 'kora.app', 'kora.testing.apps') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""


async def test_kora_server_serves_health(kora_server: SyncServer) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{kora_server.http_url}/health")
    assert response.json()["status"] == "ok"
    assert kora_server.host == "127.0.0.1"


async def test_kora_sqlite_server_keeps_a_file(
    kora_sqlite_server: SyncServer, tmp_path: Any
) -> None:
    assert (tmp_path / "kora-server.db").exists()


@pytest.mark.parametrize("transport", ["websocket", "long-polling"])
async def test_websocket_apps_sync_and_partition(kora_websocket_app: Any, transport: str) -> None:
    async with (
        kora_websocket_app(SCHEMA, transport=transport) as a,
        kora_websocket_app(SCHEMA, transport=transport) as b,
    ):
        with partition(a):
            todo = await a.todos.insert({"title": "offline"})
        with trio.fail_after(30):
            await wait_converged(a, b)
        assert (await b.todos.get(todo.id)) is not None


async def test_kora_app_runs_on_the_loop_server(
    kora_app: Any, kora_loop_server: LoopServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with kora_app(SCHEMA) as a, kora_app(SCHEMA, connect=False) as b:
        await a.todos.insert({"title": "x"})
        with trio.fail_after(30):
            while await kora_loop_server.store.operation_count() == 0:
                await trio.sleep(0.1)
        assert await b.todos.count() == 0  # never connected
        assert b.sync is not None
        await b.sync.connect()
        with trio.fail_after(30):
            await wait_converged(a, b)


async def test_partition_refuses_an_app_it_does_not_know() -> None:
    async with kora.open_app(SCHEMA, path=None) as app:
        with pytest.raises(ValueError, match=r"not opened by kora\.testing"), partition(app):
            pass
