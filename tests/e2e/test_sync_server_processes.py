"""``kora serve`` as a real process: SQLite by default, and two processes on one PostgreSQL.

PostgreSQL is expected at 127.0.0.1:5432, database ``test`` (override the DSN with
``KORA_TEST_POSTGRES_DSN``); the test is skipped when it is unreachable, and fails instead
with ``KORA_REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
import trio
from kora_server_harness import WAIT, batch_frame, json_client, make_op
from psycopg import sql

POSTGRES_DSN = os.environ.get("KORA_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
URL_LINE = re.compile(rb"connect to (ws://\S+)")


@asynccontextmanager
async def kora_serve(*args: str, cwd: Path) -> AsyncIterator[str]:
    """Run ``kora serve --port 0 ARGS`` and yield its WebSocket URL; SIGINT it at the end."""
    command = [sys.executable, "-m", "kora.cli", "serve", "--port", "0", *args]
    process = await trio.lowlevel.open_process(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        output = b""
        with trio.fail_after(20):  # a cold interpreter start can take a few seconds
            while (found := URL_LINE.search(output)) is None:
                chunk = await process.stdout.receive_some()
                if not chunk:
                    raise AssertionError(f"kora serve exited early: {output!r}")
                output += chunk
        yield found.group(1).decode()
        process.send_signal(signal.SIGINT)
        with trio.fail_after(WAIT):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(WAIT, shield=True):
                await process.wait()


async def test_kora_serve_answers_health_and_stops_on_sigint(tmp_path: Path) -> None:
    async with kora_serve(cwd=tmp_path) as url:
        http_url = url.replace("ws://", "http://").rstrip("/")
        async with httpx.AsyncClient(timeout=WAIT) as http:
            health = (await http.get(f"{http_url}/health")).json()
        assert health["status"] == "ok"
        async with json_client(url) as client:
            await client.connect("node-1")
            await client.send(batch_frame([make_op("node-1", 1)]))
            assert (await client.receive())["type"] == "acknowledgment"
    # The default store is SQLite under ./kora-data/.
    assert (tmp_path / "kora-data" / "server.db").is_file()


def _postgres_required() -> bool:
    return os.environ.get("KORA_REQUIRE_POSTGRES") == "1"


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A fresh schema name (dropped afterwards); skips when PostgreSQL is unreachable."""
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = f"PostgreSQL at {POSTGRES_DSN} is unreachable: {exc}"
        if _postgres_required():
            pytest.fail(f"{reason} (KORA_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    schema = f"kora_e2e_{secrets.token_hex(6)}"
    try:
        yield schema
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.postgres
async def test_two_processes_share_one_postgres(tmp_path: Path, postgres_schema: str) -> None:
    args = ("--postgres", POSTGRES_DSN, "--postgres-schema", postgres_schema)
    async with (
        kora_serve(*args, cwd=tmp_path) as url_a,
        kora_serve(*args, cwd=tmp_path) as url_b,
        json_client(url_b) as reader,
        json_client(url_a) as writer,
    ):
        await reader.connect("node-reader")
        await writer.connect("node-writer")
        op = make_op("node-writer", 1)
        await writer.send(batch_frame([op]))
        assert (await writer.receive())["type"] == "acknowledgment"
        # Committed through process A, delivered live by process B (LISTEN/NOTIFY).
        live = await reader.receive(within=10)
        assert live["type"] == "operation-batch"
        assert [o["id"] for o in live["operations"]] == [op.id]
        assert (live["baseDeliverySequence"], live["maxDeliverySequence"]) == (0, 1)
