"""A session's token is asked about again while the session is open (reliability.md B6 #49).

In virtual time over an in-memory transport: revocation closes the session with 4401 at
the next re-validation, a token's ``expires_at`` is honoured before the interval, a provider
outage keeps the session, and changed grants end it with a retriable error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from kora.core.ids import uuid7
from kora.server import MemoryServerStore, ServerLimits
from kora.server.auth import AuthContext, TokenAuthProvider
from kora.server.context import ServerContext
from kora.server.session import SyncSession
from tests.server.test_server_session import PipeTransport


class Tokens:
    """A token service the test can revoke tokens in, or make fail."""

    def __init__(self) -> None:
        self.contexts: dict[str, AuthContext] = {}
        self.down = False
        self.calls = 0

    async def validate(self, token: str) -> AuthContext | None:
        self.calls += 1
        if self.down:
            raise RuntimeError("identity service unavailable")
        return self.contexts.get(token)


@asynccontextmanager
async def server(tokens: Tokens, **limits: Any) -> AsyncIterator[tuple[ServerContext, Any]]:
    limits.setdefault("ping_interval", None)
    async with MemoryServerStore() as store, trio.open_nursery() as nursery:
        ctx = ServerContext(
            store=store,
            auth=TokenAuthProvider(validate=tokens.validate),
            schema=None,
            schema_range=(1, 1),
            batch_size=100,
            limits=ServerLimits(**limits),
            allowed_origins=None,
        )

        def connect(clock_ms: Any = None) -> PipeTransport:
            pipe = PipeTransport()
            session = SyncSession(ctx, pipe, session_id=uuid7(), clock_ms=clock_ms)
            nursery.start_soon(session.run)
            return pipe

        yield ctx, connect
        ctx.shutdown.set()


def hello(token: str) -> str:
    return json.dumps(
        {
            "type": "handshake",
            "messageId": "h1",
            "nodeId": "node-a",
            "versionVector": {},
            "schemaVersion": 1,
            "authToken": token,
        }
    )


async def connected(connect: Any, token: str, clock_ms: Any = None) -> PipeTransport:
    pipe: PipeTransport = connect(clock_ms)
    await pipe.put(hello(token))
    response = await pipe.get()
    assert response["type"] == "handshake-response"
    assert response["accepted"] is True
    return pipe


async def test_a_revoked_token_loses_its_session_at_the_next_revalidation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tokens = Tokens()
    tokens.contexts["t"] = AuthContext(user_id="alice")
    async with server(tokens, auth_revalidate_interval=60) as (_, connect):
        pipe = await connected(connect, "t")
        await trio.sleep(59)
        assert pipe.close_code is None  # still valid: asked again at 60 s, not before
        del tokens.contexts["t"]
        start = trio.current_time()
        messages = [message async for message in _drain(pipe)]
        assert trio.current_time() - start <= 60
        errors = [m for m in messages if m["type"] == "error"]
        assert [(e["code"], e["retriable"]) for e in errors] == [("AUTH_FAILED", False)]
        assert pipe.close_code == 4401


async def test_the_token_is_asked_about_again_at_its_expiry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tokens = Tokens()
    wall = 1_700_000_000.0
    tokens.contexts["t"] = AuthContext(user_id="alice", expires_at=wall + 5)

    def clock_ms() -> int:
        return int((wall + trio.current_time() - started) * 1000)

    started = trio.current_time()
    async with server(tokens, auth_revalidate_interval=60) as (_, connect):
        pipe = await connected(connect, "t", clock_ms)
        del tokens.contexts["t"]  # the provider refuses an expired token
        with trio.fail_after(6):
            _ = [message async for message in _drain(pipe)]
        assert pipe.close_code == 4401


async def test_a_provider_outage_keeps_the_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tokens = Tokens()
    tokens.contexts["t"] = AuthContext(user_id="alice")
    async with server(tokens, auth_revalidate_interval=10) as (_, connect):
        pipe = await connected(connect, "t")
        tokens.down = True
        await trio.sleep(35)
        assert tokens.calls >= 4  # the handshake and three re-validations
        assert pipe.close_code is None
        tokens.down = False
        del tokens.contexts["t"]
        with trio.fail_after(11):
            _ = [message async for message in _drain(pipe)]
        assert pipe.close_code == 4401


async def test_changed_grants_end_the_session_with_a_retriable_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tokens = Tokens()
    tokens.contexts["t"] = AuthContext(user_id="alice", scopes={"todos": {"owner": "alice"}})
    async with server(tokens, auth_revalidate_interval=10) as (_, connect):
        pipe = await connected(connect, "t")
        tokens.contexts["t"] = AuthContext(user_id="alice", scopes={})
        with trio.fail_after(11):
            messages = [message async for message in _drain(pipe)]
        errors = [m for m in messages if m["type"] == "error"]
        assert [(e["code"], e["retriable"]) for e in errors] == [("SYNC_ERROR", True)]
        assert pipe.close_code == 4401


async def test_an_unchanged_token_keeps_its_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tokens = Tokens()
    tokens.contexts["t"] = AuthContext(user_id="alice", scopes={"todos": {"owner": "alice"}})
    async with server(tokens, auth_revalidate_interval=10) as (_, connect):
        pipe = await connected(connect, "t")
        await trio.sleep(100)
        assert tokens.calls >= 10
        assert pipe.close_code is None


async def _drain(pipe: PipeTransport) -> AsyncIterator[dict[str, Any]]:
    """Every message until the session closes the transport."""
    with trio.fail_after(120):
        async for frame in pipe._out_receive:
            yield json.loads(frame)
