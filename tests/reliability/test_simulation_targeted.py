"""B1 targeted deterministic cases, each built with an exact fault (virtual time).

The nine targeted cases of reliability.md B1, by their names there:

* "drop exactly the ack of batch k": ``..._dropped_ack_is_resent_and_stored_once``;
* "drop one op in the middle (a VV gap)": ``..._vv_gap_on_delivery`` (server to client),
  ``..._vv_gap_on_upload`` (client to server), and the strict reading of S3/I4 while the
  gap is open, ``..._vv_gap_on_upload_no_vector_passes_the_gap`` (xfail: vectors are a
  maximum by design, spec 4.1);
* "duplicate the handshake": ``..._duplicate_the_handshake_on_one_connection`` and
  ``..._duplicate_the_handshake_same_node_reconnects_mid_session`` (half-open session);
* "delete delivered before insert": ``..._delete_delivered_before_insert``;
* "update arriving on a tombstone": ``..._update_arriving_on_a_tombstone``;
* "3 concurrent increments (5+3+2 must give 10)": ``..._concurrent_increments_add_up``;
* "equal HLC from two nodes": ``..._equal_hlc_from_two_nodes``;
* "a client wall clock that jumps back 1 h": ``..._client_wall_clock_jumps_back_1_h`` and
  ``..._then_receives`` (a client more than 5 min behind accepts newer remote ops: the
  handshake sets its clock's reference offset; this case found that it did not);
* "server restart between commit and ack": ``..._server_restart_between_commit_and_ack``,
  and its client side from the same SQLite file,
  ``..._client_restart_between_commit_and_ack``.

Each runs under ``autojump_clock`` (no real sleeps) and, after quiesce, checks I1-I7 of B1
(``converge``): byte-identical canonical dumps, equal op-id sets equal to every locally
committed op, no duplicates, contiguous and equal vectors, the LWW oracle, empty queues,
increasing HLCs per node; then the exact outcome the case is about.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import pytest
import trio
import trio.testing

import kora
import kora.store.sqlite
from kora.core.operation import Operation, OpType
from kora.server import MemoryServerStore
from kora.store import Store
from kora.store.memory import open_memory_store
from kora.store.sqlite import open_sqlite_store
from kora.store.values import LocalMutation
from kora.sync import SyncOptions, open_sync
from kora.sync.engine import SyncEngine
from kora.sync.transport import Frame, Transport, TransportFactory
from kora.testing import (
    ChaosConfig,
    Direction,
    LoopServer,
    NetworkLink,
    chaos_transport,
    frame_message,
    loop_clock_ms,
    open_loop_server,
    open_test_app,
    partition,
    wait_converged,
)
from kora.testing.loop_server import EPOCH_MS
from kora.testing.replicas import (
    Dump,
    app_store,
    canonical_dump,
    digest,
    server_dump,
    server_operations,
    store_dump,
    store_operations,
)

SCHEMA = kora.define_schema(
    version=1, collections={"counters": {"name": kora.string(), "n": kora.integer(default=0)}}
)


def first_ack_dropper() -> Any:
    dropped: list[str] = []

    def predicate(frame: Any, direction: Direction) -> bool:
        message = frame_message(frame)
        if direction is Direction.INCOMING and message["type"] == "acknowledgment" and not dropped:
            dropped.append(message)
            return True
        return False

    return predicate, dropped


async def test_simulation_targeted_dropped_ack_is_resent_and_stored_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    predicate, dropped = first_ack_dropper()
    async with MemoryServerStore() as store, open_loop_server(store) as server:
        chaos = ChaosConfig(drop_predicate=predicate)
        async with (
            open_test_app(SCHEMA, server, chaos=chaos) as a,
            open_test_app(SCHEMA, server) as b,
        ):
            record = await a.counters.insert({"name": "x"})
            with trio.fail_after(120):
                await wait_converged(a, b)
            assert dropped, "the ack was never dropped"
            assert (await b.counters.get(record.id)) is not None
            log = await server_operations(store)
            local = await store_operations(app_store(a))
            assert [op.id for op in log] == [op.id for op in local]  # resent, stored once


async def test_simulation_targeted_concurrent_increments_add_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        MemoryServerStore() as store,
        open_loop_server(store) as server,
        open_test_app(SCHEMA, server) as a,
        open_test_app(SCHEMA, server) as b,
        open_test_app(SCHEMA, server) as c,
    ):
        record = await a.counters.insert({"name": "hits"})
        with trio.fail_after(60):
            await wait_converged(a, b, c)
        for app in (a, b, c):
            assert app.sync is not None
            await app.sync.disconnect()
        await a.counters.increment(record.id, "n", 5)
        await b.counters.increment(record.id, "n", 3)
        await c.counters.increment(record.id, "n", 2)
        for app in (a, b, c):
            assert app.sync is not None
            await app.sync.connect()
        with trio.fail_after(60):
            await wait_converged(a, b, c)
        for app in (a, b, c):
            assert (await app.counters.get(record.id)).fields["n"] == 10  # type: ignore[union-attr]


# ---------------------------------------------------------------- harness of the cases below
#
# The cases below need what ``open_test_app`` does not give: a chosen node id (the tie-break
# of equal clocks is by node id), a physical clock the test moves (a jump back), a store
# reopened from its SQLite file (a restart), and the whole log to compare.  So each node is
# a store (``MemoryStore``, or ``SQLiteStore`` on a file) with its own engine
# (``kora.sync.open_sync``) over a ``NetworkLink`` to a ``LoopServer`` on a
# ``MemoryServerStore``, in the test's trio loop, all on the virtual clock.

COLLECTION: Final = "todos"
FAST: Final[dict[str, Any]] = {
    "reconnect_interval": 0.1,
    "max_reconnect_interval": 1.0,
    "ack_timeout": 5.0,
    "connect_timeout": 5.0,
}


class Clock:
    """A node's physical clock: the loop's virtual time plus an offset the test moves.

    Made inside the trio run; it reads the run's clock object directly, because a SQLite
    store calls it from its worker thread, where ``trio.current_time()`` is unavailable.
    """

    def __init__(self, offset_ms: int = 0, *, frozen_at: int | None = None) -> None:
        self.offset_ms = offset_ms
        self.frozen_at = frozen_at
        self._trio_clock = trio.lowlevel.current_clock()

    def __call__(self) -> int:
        if self.frozen_at is not None:
            return self.frozen_at
        return EPOCH_MS + int(self._trio_clock.current_time() * 1000) + self.offset_ms


def frame_json(frame: Frame) -> dict[str, Any]:
    """A frame's message as JSON, whichever wire format carried it."""
    return frame_message(frame)


def batch_sequences(frame: Frame, node_id: str) -> list[int]:
    """The sequence numbers of ``node_id``'s operations in an ``operation-batch`` frame."""
    message = frame_json(frame)
    if message.get("type") != "operation-batch":
        return []
    return [op["sequenceNumber"] for op in message.get("operations", ()) if op["nodeId"] == node_id]


@attrs.define
class Node:
    """One client replica and what the test saw of it."""

    store: Store
    link: NetworkLink
    clock: Clock
    written: list[Operation] = attrs.field(factory=list)
    events: list[tuple[str, dict[str, Any]]] = attrs.field(factory=list)
    engine: SyncEngine | None = None
    vector_samples: dict[str, int] = attrs.field(factory=dict)

    @property
    def node_id(self) -> str:
        return self.store.node_id

    def count(self, name: str) -> int:
        return sum(1 for event, _ in self.events if event == name)

    async def write(self, *mutations: LocalMutation) -> list[Operation]:
        """Write locally (one transaction), checking that every stamp is after the last (I7)."""
        before = await self.store.last_timestamp()
        ops = await self.store.write_local_many(list(mutations))
        stamps = [before, *(op.timestamp for op in ops)] if before else [op.timestamp for op in ops]
        for earlier, later in itertools.pairwise(stamps):
            assert earlier is not None
            assert later.sort_key() > earlier.sort_key(), f"I7: {later} after {earlier}"
        self.written.extend(ops)
        return ops

    async def insert(self, record_id: str, data: dict[str, Any]) -> Operation:
        (op,) = await self.write(LocalMutation.insert(COLLECTION, data, record_id=record_id))
        return op

    async def update(self, record_id: str, data: dict[str, Any]) -> Operation:
        (op,) = await self.write(LocalMutation.update(COLLECTION, record_id, data))
        return op

    async def delete(self, record_id: str) -> Operation:
        (op,) = await self.write(LocalMutation.delete(COLLECTION, record_id))
        return op

    async def record(self, record_id: str) -> Any:
        return await self.store.get(COLLECTION, record_id, include_deleted=True)


class _TrioWithInlineThreads:
    """``trio`` as ``kora.store.sqlite`` sees it under ``sqlite_in_loop``: the same module,
    except that ``to_thread.run_sync`` runs the job inline, in the loop."""

    def __getattr__(self, name: str) -> Any:
        return getattr(trio, name)

    class to_thread:
        @staticmethod
        async def run_sync(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
            await trio.lowlevel.checkpoint()
            return fn(*args)


@pytest.fixture
def sqlite_in_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite stores run their jobs inline, in the trio loop (reliability.md B1: "stores
    use synchronous sqlite3 in-loop, no threads inside the simulation").  With a worker
    thread, the autojump clock would jump to the next deadline whenever every task waits
    for SQLite, so acknowledgment timeouts would fire at random and virtual time would
    run away (hundreds of seconds per test)."""
    monkeypatch.setattr(kora.store.sqlite, "trio", _TrioWithInlineThreads())


@asynccontextmanager
async def open_store_at(node_id: str, clock: Clock, path: Path | None) -> AsyncIterator[Store]:
    if path is None:
        async with open_memory_store(node_id=node_id, physical_clock=clock) as memory:
            yield memory
    else:
        async with open_sqlite_store(str(path), node_id=node_id, physical_clock=clock) as sqlite:
            yield sqlite


@asynccontextmanager
async def open_node(
    server: LoopServer,
    node_id: str,
    *,
    clock: Clock | None = None,
    path: Path | None = None,
    chaos: ChaosConfig | None = None,
    wrap: Callable[[TransportFactory], TransportFactory] | None = None,
    connect: bool = True,
    written: list[Operation] | None = None,
    **options: Any,
) -> AsyncIterator[Node]:
    """A node syncing with ``server`` for the block (its engine stops when the block ends).

    ``wrap`` puts a transport wrapper between the chaos and the network link; ``written``
    carries the log of a previous incarnation of the same node (a restart).
    """
    clock = clock or Clock()
    inner: TransportFactory = server.connect
    if chaos is not None:
        inner = chaos_transport(inner, chaos, seed=0)
    if wrap is not None:
        inner = wrap(inner)
    link = NetworkLink(inner)
    async with open_store_at(node_id, clock, path) as store:
        node = Node(store, link, clock, written if written is not None else [])

        def emit(name: str, payload: Any) -> None:
            node.events.append((name, {**payload, "at": trio.current_time()}))

        sync_options = SyncOptions(url="memory://", transport=link, **{**FAST, **options})
        async with open_sync(store, sync_options, emit=emit) as engine:
            node.engine = engine
            if connect:
                await engine.connect()
            yield node
            node.engine = None


def lww_oracle(ops: Iterable[Operation]) -> dict[tuple[str, str], dict[str, Any]]:
    """Record states folded from a log as the spec words it (3.3, 3.7), written
    independently of ``kora.merge``: HLC order (wall time, counter, node id); an insert
    sets the record, an update sets its fields (last writer wins per field), a delete
    tombstones and keeps the fields, a later insert or update un-deletes.  (No atomic
    operations in these cases.)"""
    by_record: dict[tuple[str, str], list[Operation]] = defaultdict(list)
    for op in ops:
        by_record[(op.collection, op.record_id)].append(op)
    states = {}
    for key, record_ops in by_record.items():
        fields: dict[str, Any] = {}
        deleted = False
        for op in sorted(
            record_ops,
            key=lambda o: (o.timestamp.wall_time, o.timestamp.logical, o.timestamp.node_id),
        ):
            assert not op.atomic_ops, "the oracle folds plain writes only"
            if op.type is OpType.DELETE:
                deleted = True
            elif op.type is OpType.INSERT:
                fields, deleted = dict(op.data or {}), False
            else:
                fields.update(op.data or {})
                deleted = False
        states[key] = {"fields": fields, "deleted": deleted}
    return states


async def replicas_agree(server: LoopServer, nodes: Sequence[Node]) -> bool:
    server_vector = (await server.store.version_vector()).to_wire()
    agree = True
    for node in nodes:
        vector = (await node.store.version_vector()).to_wire()
        for origin, sequence in vector.items():  # I4: never decreasing at a sampled point
            assert sequence >= node.vector_samples.get(origin, 0), (
                f"I4: {node.node_id}'s vector went back for {origin}"
            )
            node.vector_samples[origin] = sequence
        agree = agree and vector == server_vector and not await node.store.pending_count()
    if not agree:
        return False
    expected = await server_dump(server.store, [COLLECTION])
    for node in nodes:
        if await store_dump(node.store, [COLLECTION]) != expected:
            return False
    return True


async def disagreement(server: LoopServer, nodes: Sequence[Node]) -> str:
    """What differs between the replicas (for the failure message)."""
    lines = [f"server vector {(await server.store.version_vector()).to_wire()}"]
    expected = await server_dump(server.store, [COLLECTION])
    for node in nodes:
        dump = await store_dump(node.store, [COLLECTION])
        lines.append(
            f"{node.node_id}: pending {await node.store.pending_count()}, vector "
            f"{(await node.store.version_vector()).to_wire()}, "
            f"dump {'equal' if dump == expected else dump}, "
            f"last events {[(e[0], e[1]['at'], e[1].get('reason')) for e in node.events[-8:] if e[0] != 'sync:status']}, "
            f"apply failures {[e[1] for e in node.events if e[0] == 'sync:apply-failed']}"
        )
    return "; ".join(lines)


async def converge(server: LoopServer, *nodes: Node, within: float = 60.0) -> Dump:
    """Wait until the replicas quiesce (I8: within ``within`` virtual seconds), then check
    I1-I7 of reliability.md B1 (the LWW oracle over the union log included); the dump."""
    with trio.move_on_after(within) as waiting:
        while not await replicas_agree(server, nodes):
            await trio.sleep(0.05)
    if waiting.cancelled_caught:
        raise AssertionError(
            f"I8: no convergence within {within} s: {await disagreement(server, nodes)}"
        )
    server_log = await server_operations(server.store)
    server_ids = [op.id for op in server_log]
    assert len(server_ids) == len(set(server_ids)), "I3: the server log holds an id twice"
    written = {op.id for node in nodes for op in node.written}
    assert set(server_ids) - written == set(), "I2: unexpected operations on the server"
    assert written - set(server_ids) == set(), "I2: locally committed operations were lost"
    server_vector = (await server.store.version_vector()).to_wire()
    per_node: dict[str, list[Operation]] = defaultdict(list)
    for op in server_log:
        per_node[op.node_id].append(op)
    for node_id, ops in per_node.items():
        ops.sort(key=lambda o: o.sequence_number)
        assert [o.sequence_number for o in ops] == list(range(1, len(ops) + 1)), (
            f"I4: {node_id}'s log on the server is not contiguous"
        )
        assert server_vector[node_id] == len(ops), f"I4: the server's vector is off for {node_id}"
        for earlier, later in itertools.pairwise(ops):
            assert later.timestamp.sort_key() > earlier.timestamp.sort_key(), (
                f"I7: {node_id}'s timestamps do not increase"
            )
    expected = await server_dump(server.store, [COLLECTION])
    for node in nodes:
        ops = await store_operations(node.store)
        ids = [op.id for op in ops]
        assert len(ids) == len(set(ids)), f"I3: {node.node_id} holds an id twice"
        assert set(ids) == set(server_ids), f"I2: {node.node_id}'s op set differs"
        assert (await node.store.version_vector()).to_wire() == server_vector, "I4"
        dump = await store_dump(node.store, [COLLECTION])
        assert canonical_dump(dump) == canonical_dump(expected), f"I1: {node.node_id} differs"
        assert digest(dump) == digest(expected)
        assert await node.store.pending_count() == 0, "I6: operations left in the queue"
        assert await node.store.rejected_operations() == [], "I6: rejected operations"
        assert not [e for e in node.events if e[0] == "sync:apply-failed"], "apply failures"
    for (collection, record_id), state in lww_oracle(server_log).items():
        got = expected[collection][record_id]
        assert {"fields": got["fields"], "deleted": got["deleted"]} == state, (
            f"I5: {collection}/{record_id} is {got}, the oracle says {state}"
        )
    return expected


@asynccontextmanager
async def loop_system(**server_options: Any) -> AsyncIterator[LoopServer]:
    """A loop server on a memory store, on the virtual wall clock the nodes share."""
    async with (
        MemoryServerStore() as store,
        open_loop_server(store, clock_ms=loop_clock_ms, **server_options) as server,
    ):
        yield server


# ---------------------------------------------------------------- transport wrappers


class _Tapped:
    """A connection that sends some frames twice and records every frame it receives."""

    def __init__(self, inner: Transport, tap: Tap) -> None:
        self._inner = inner
        self._tap = tap

    async def send(self, frame: Frame) -> None:
        await self._inner.send(frame)
        if self._tap.duplicate(frame):
            self._tap.duplicated.append(frame)
            await self._inner.send(frame)

    async def receive(self) -> Frame:
        frame = await self._inner.receive()
        self._tap.received.append(frame_json(frame))
        return frame

    async def aclose(self) -> None:
        await self._inner.aclose()


@attrs.define
class Tap:
    """Wraps a transport factory: ``duplicate(frame)`` true sends that frame twice."""

    duplicate: Callable[[Frame], bool]
    duplicated: list[Frame] = attrs.field(factory=list)
    received: list[dict[str, Any]] = attrs.field(factory=list)

    def __call__(self, inner: TransportFactory) -> TransportFactory:
        @asynccontextmanager
        async def connect() -> AsyncIterator[Transport]:
            async with inner() as transport:
                yield _Tapped(transport, self)

        return connect


class _GhostEnd:
    def __init__(self, inner: Transport, ghosts: HalfOpen) -> None:
        self._inner = inner
        self._ghosts = ghosts

    async def send(self, frame: Frame) -> None:
        await self._inner.send(frame)

    async def receive(self) -> Frame:
        return await self._inner.receive()

    async def aclose(self) -> None:
        if self._ghosts.half_open:
            await trio.lowlevel.checkpoint()  # the close never reaches the server
        else:
            await self._inner.aclose()


class HalfOpen:
    """Wraps a transport factory: while ``half_open`` is set, a connection the client
    drops stays open on the server's side (a half-open TCP connection: the device moved
    on, the server still holds its session) until ``release``."""

    def __init__(self) -> None:
        self.half_open = False
        self._held: list[AsyncExitStack] = []

    @property
    def held(self) -> int:
        return len(self._held)

    def __call__(self, inner: TransportFactory) -> TransportFactory:
        @asynccontextmanager
        async def connect() -> AsyncIterator[Transport]:
            stack = AsyncExitStack()
            transport = await stack.enter_async_context(inner())
            try:
                yield _GhostEnd(transport, self)
            finally:
                if self.half_open:
                    self._held.append(stack)
                else:
                    await stack.aclose()

        return connect

    async def release(self) -> None:
        self.half_open = False
        held, self._held = self._held, []
        for stack in held:
            await stack.aclose()


def applied_sequences(node: Node, origin: str) -> list[int]:
    """``origin``'s sequence numbers in the order ``node`` applied them (sync:received)."""
    return [
        op.sequence_number
        for name, payload in node.events
        if name == "sync:received"
        for op in payload["operations"]
        if op.node_id == origin
    ]


def inserts(first: int, last: int) -> list[LocalMutation]:
    return [
        LocalMutation.insert(COLLECTION, {"title": f"t{i}", "n": i}, record_id=f"r{i}")
        for i in range(first, last + 1)
    ]


# ---------------------------------------------------------------- duplicate the handshake


async def test_simulation_targeted_duplicate_the_handshake_on_one_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """B1 targeted "duplicate the handshake": the network delivers the client's first
    handshake frame twice on one connection.  The server answers the second with a
    non-fatal ``error DUPLICATE_HANDSHAKE`` (spec 8.3) and keeps the session; whatever the
    client makes of it, every write reaches every replica exactly once (I1-I7), in at most
    one more connection."""
    tap = Tap(lambda frame: frame_json(frame).get("type") == "handshake" and not tap.duplicated)
    async with (
        loop_system() as server,
        open_node(server, "node-a", wrap=tap, connect=False) as a,
        open_node(server, "node-b") as b,
    ):
        await a.write(*inserts(1, 5))
        await b.write(*inserts(6, 8))
        assert a.engine is not None
        await a.engine.connect()
        await converge(server, a, b)
        await a.update("r6", {"title": "from a"})
        await b.update("r1", {"title": "from b"})
        dump = await converge(server, a, b)
    assert len(tap.duplicated) == 1
    errors = [m for m in tap.received if m.get("type") == "error"]
    assert [e["code"] for e in errors] == ["DUPLICATE_HANDSHAKE"]
    assert a.count("sync:connected") <= 2
    assert dump[COLLECTION]["r6"]["fields"]["title"] == "from a"
    assert dump[COLLECTION]["r1"]["fields"]["title"] == "from b"


async def test_simulation_targeted_duplicate_the_handshake_same_node_reconnects_mid_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """B1 targeted "duplicate the handshake", across connections: the client loses its
    connection but the server never notices (half-open), and the client reconnects with
    the same node id while its first session is still open on the server.  Both sessions
    of node-a live side by side; node-a's writes before, during and after must still reach
    every replica exactly once, node-b's writes must reach node-a over the new session, and
    closing the ghost session at last changes nothing."""
    ghosts = HalfOpen()
    async with (
        loop_system() as server,
        open_node(server, "node-a", wrap=ghosts) as a,
        open_node(server, "node-b") as b,
    ):
        await a.write(*inserts(1, 3))
        await converge(server, a, b)
        ghosts.half_open = True
        with partition(a.link):
            await a.write(*inserts(4, 6))  # offline: queued
        # The engine reconnects by itself; the server now has two sessions of node-a.
        with trio.fail_after(30):
            while a.count("sync:connected") < 2:
                await trio.sleep(0.05)
        assert ghosts.held == 1
        assert server.context.sessions.count("memory") == 3  # the ghost, node-a again, node-b
        await b.write(*inserts(7, 9))
        await converge(server, a, b)
        await a.update("r7", {"title": "a on b's"})
        await b.update("r4", {"title": "b on a's offline one"})
        await converge(server, a, b)
        await ghosts.release()
        await a.update("r1", {"title": "after the ghost"})
        dump = await converge(server, a, b)
    assert dump[COLLECTION]["r7"]["fields"]["title"] == "a on b's"
    assert dump[COLLECTION]["r4"]["fields"]["title"] == "b on a's offline one"
    assert dump[COLLECTION]["r1"]["fields"]["title"] == "after the ghost"


# ---------------------------------------------------------------- a VV gap


async def test_simulation_targeted_drop_one_op_in_the_middle_vv_gap_on_delivery(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """B1 targeted "drop one op in the middle (a VV gap)", server to client: node-b
    receives node-a's ops 1..10, the batch of 11..19 is dropped, 20..30 arrive, and 11..19
    only later (the server's redelivery).  node-b must not apply 20..30 over the gap (it
    ignores a batch whose base is above its watermark, spec 4.4), so its version vector
    never passes the gap, and it ends converged with each op once."""
    frames: list[list[int]] = []

    def drop_11_to_19(frame: Frame, direction: Direction) -> bool:
        sequences = batch_sequences(frame, "node-a") if direction is Direction.INCOMING else []
        if sequences:
            frames.append(sequences)
            return sequences[0] == 11 and frames.count(sequences) == 1
        return False

    async with (
        loop_system() as server,
        open_node(server, "node-a") as a,
        open_node(server, "node-b", chaos=ChaosConfig(drop_predicate=drop_11_to_19)) as b,
    ):
        await a.write(*inserts(1, 10))
        await converge(server, a, b)
        await a.write(*inserts(11, 19))
        with trio.fail_after(10):
            while [11, *range(12, 20)] not in frames:
                await trio.sleep(0.01)
        await a.write(*inserts(20, 30))
        await converge(server, a, b)
    assert frames[:3] == [list(range(1, 11)), list(range(11, 20)), list(range(20, 31))]
    assert list(range(11, 31)) in frames[3:]  # redelivered from the acknowledged position
    assert applied_sequences(b, "node-a") == list(range(1, 31))  # never past the gap


@asynccontextmanager
async def upload_with_a_dropped_batch(
    dropped: list[list[int]],
) -> AsyncIterator[tuple[LoopServer, Node, Node]]:
    """node-a comes online with 30 queued ops in batches of 10 and the batch that starts at
    11 is dropped once (its sequences go to ``dropped``); node-c watches.  Yields once
    node-a started connecting."""

    def drop_11_to_20(frame: Frame, direction: Direction) -> bool:
        sequences = batch_sequences(frame, "node-a") if direction is Direction.OUTGOING else []
        if sequences[:1] == [11] and not dropped:
            dropped.append(sequences)
            return True
        return False

    async with (
        loop_system() as server,
        open_node(
            server,
            "node-a",
            chaos=ChaosConfig(drop_predicate=drop_11_to_20),
            connect=False,
            batch_size=10,
        ) as a,
        open_node(server, "node-c") as c,
    ):
        await a.write(*inserts(1, 30))
        assert a.engine is not None
        await a.engine.connect()
        yield server, a, c


async def test_simulation_targeted_drop_one_op_in_the_middle_vv_gap_on_upload(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """B1 targeted "drop one op in the middle (a VV gap)", client to server: node-a comes
    online with 30 queued ops in three batches (up to 4 in flight) and the batch of 11..20
    is dropped.  The server stores 1..10 and 21..30 first; node-a gets no acknowledgment
    for the dropped batch (the next one's is out of order), times out, reconnects and sends
    its queue again; the server stores 11..20 once and drops the duplicates.  Everything
    converges (I1-I7) and node-c, which watched it all, holds every op once."""
    dropped: list[list[int]] = []

    async with upload_with_a_dropped_batch(dropped) as (server, a, c):
        await converge(server, a, c)
    assert dropped == [list(range(11, 21))]
    assert a.count("sync:connected") == 2  # the ack timeout reopened the connection once
    assert sorted(applied_sequences(c, "node-a")) == list(range(1, 31))


@pytest.mark.xfail(
    strict=True,
    reason=(
        "version vectors are a per-node maximum, not a contiguous frontier (spec 4.1, "
        "docs/server.md, docs/data-model.md): after a dropped client batch the server "
        "stores node-a's 21..30 before 11..20, its vector says node-a:30 over the gap, "
        "and it delivers 21..30 to node-c before 11..20, so node-c's vector passes the "
        "gap too (reliability.md S3/I4 and section 5.3 #29 ask for contiguous sequences)"
    ),
)
async def test_simulation_targeted_vv_gap_on_upload_no_vector_passes_the_gap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The strict reading of B1 "drop one op in the middle (a VV gap)": while 11..20 are
    missing, no replica's version vector may claim node-a:30 (S3: the server's vector is
    the maximum contiguous sequence per node; the vector of a client that received
    1..10 and 21..30 must not pass the gap either)."""
    dropped: list[list[int]] = []
    server_vectors: list[int] = []

    async with upload_with_a_dropped_batch(dropped) as (server, a, c):
        with trio.fail_after(60):
            while not await replicas_agree(server, [a, c]):
                server_vectors.append((await server.store.version_vector()).get("node-a"))
                held = {op.sequence_number for op in await server_operations(server.store)}
                assert server_vectors[-1] == len(held), (
                    f"the server's vector says node-a:{server_vectors[-1]} "
                    f"while it holds {len(held)} of node-a's ops"
                )
                await trio.sleep(0.01)
        await converge(server, a, c)
    applied = applied_sequences(c, "node-a")
    assert applied == list(range(1, 31)), f"node-c applied node-a's ops in the order {applied}"


# ---------------------------------------------------------------- delete before insert


async def test_simulation_targeted_delete_delivered_before_insert(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """B1 targeted "delete delivered before insert": node-a inserts r1 and deletes it
    offline; on reconnection the batch with the insert is dropped once, so the server
    stores (and node-b applies) the delete of a record it has never seen, and the insert
    only after node-a's resend.  Merge is by HLC, not arrival (spec 3.7, catalogue row
    42): every replica ends with r1 as a tombstone holding the insert's fields, and r2,
    inserted after, is alive."""
    dropped: list[str] = []
    async with loop_system() as server:
        holder: list[str] = []

        def drop_the_insert(frame: Frame, direction: Direction) -> bool:
            message = frame_json(frame) if direction is Direction.OUTGOING else {}
            ids = [op["id"] for op in message.get("operations", ())]
            if holder and holder[0] in ids and not dropped:
                dropped.extend(ids)
                return True
            return False

        async with (
            open_node(
                server,
                "node-a",
                chaos=ChaosConfig(drop_predicate=drop_the_insert),
                connect=False,
                batch_size=1,
            ) as a,
            open_node(server, "node-b") as b,
        ):
            insert = await a.insert("r1", {"title": "doomed", "n": 1})
            holder.append(insert.id)
            delete = await a.delete("r1")
            await a.insert("r2", {"title": "kept", "n": 2})
            assert a.engine is not None
            await a.engine.connect()
            dump = await converge(server, a, b)
            seen_by_b = [
                op.id for name, p in b.events if name == "sync:received" for op in p["operations"]
            ]
        stored = [op.id for op in await server_operations(server.store)]
    assert dropped == [insert.id]
    assert stored.index(delete.id) < stored.index(insert.id)  # the server got the delete first
    assert seen_by_b.index(delete.id) < seen_by_b.index(insert.id)  # so did node-b
    r1 = dump[COLLECTION]["r1"]
    assert r1["deleted"] is True
    assert r1["fields"] == {"title": "doomed", "n": 1}
    assert r1["versions"] == dict.fromkeys(("title", "n"), insert.timestamp.serialize())
    assert dump[COLLECTION]["r2"]["deleted"] is False


# ---------------------------------------------------------------- update on a tombstone


async def test_simulation_targeted_update_arriving_on_a_tombstone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """B1 targeted "update arriving on a tombstone": node-b deletes r1 and r2 while
    node-a, offline, updates both; the deletes reach the server first, so node-a's updates
    arrive on tombstones (on the server and on node-b).  By HLC (docs/conflicts.md): the
    update of r1 is later than its delete, so r1 comes back with the pre-delete fields
    merged with the update; the update of r2 is earlier than its delete, so r2 stays
    deleted (its kept fields hold the update, invisible to queries)."""
    async with (
        loop_system() as server,
        open_node(server, "node-a") as a,
        open_node(server, "node-b") as b,
    ):
        await a.write(*inserts(1, 2))
        await converge(server, a, b)
        await trio.sleep(10)
        with partition(a.link, b.link):
            a.clock.offset_ms = -3_000  # node-a's update of r2 is 3 s before the delete
            early = await a.update("r2", {"title": "early"})
            deletes = [await b.delete("r1"), await b.delete("r2")]
            a.clock.offset_ms = 5_000  # and its update of r1 5 s after it
            late = await a.update("r1", {"title": "late"})
        assert early.timestamp.sort_key() < deletes[1].timestamp.sort_key()
        assert late.timestamp.sort_key() > deletes[0].timestamp.sort_key()
        # node-b's deletes reach the server before node-a's updates do.
        a.link.cut()
        with trio.fail_after(30):
            while (await server.store.version_vector()).get("node-b") < 2:
                await trio.sleep(0.05)
        a.link.heal()
        dump = await converge(server, a, b)
        stored = [op.id for op in await server_operations(server.store)]
        visible = {r.id for r in await b.store.query(COLLECTION)}
    assert stored.index(deletes[0].id) < stored.index(late.id)
    assert stored.index(deletes[1].id) < stored.index(early.id)
    assert dump[COLLECTION]["r1"]["deleted"] is False
    assert dump[COLLECTION]["r1"]["fields"] == {"title": "late", "n": 1}
    assert dump[COLLECTION]["r2"]["deleted"] is True
    assert dump[COLLECTION]["r2"]["fields"] == {"title": "early", "n": 2}
    assert visible == {"r1"}


# ---------------------------------------------------------------- equal HLC


async def test_simulation_targeted_equal_hlc_from_two_nodes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """B1 targeted "equal HLC from two nodes (the tie-break must be deterministic)":
    node-a and node-b, with the same frozen physical clock and the same history, write the
    same fields of r1 and insert the same new record r3 at exactly the same wall time and
    counter.  The total order breaks the tie by node id (spec 3.3: wall time, counter,
    then node id), so node-b's writes win everywhere, although node-a's arrive at the
    server last, and the per-field versions name node-b."""
    frozen = loop_clock_ms() + 1_000
    async with (
        loop_system() as server,
        open_node(server, "node-c", clock=Clock(frozen_at=frozen - 1_000)) as c,
        open_node(server, "node-a", clock=Clock(frozen_at=frozen)) as a,
        open_node(server, "node-b", clock=Clock(frozen_at=frozen)) as b,
    ):
        await c.insert("r1", {"title": "c", "n": 0})
        await converge(server, a, b, c)
        a.link.cut()
        b.link.cut()
        from_a = await a.write(
            LocalMutation.update(COLLECTION, "r1", {"title": "a", "n": 1}),
            LocalMutation.insert(COLLECTION, {"title": "a3"}, record_id="r3"),
        )
        from_b = await b.write(
            LocalMutation.update(COLLECTION, "r1", {"title": "b", "n": 2}),
            LocalMutation.insert(COLLECTION, {"title": "b3"}, record_id="r3"),
        )
        b.link.heal()  # node-b's writes reach the server first, node-a's last
        for op_a, op_b in zip(from_a, from_b, strict=True):
            assert op_a.timestamp.wall_time == op_b.timestamp.wall_time == frozen
            assert op_a.timestamp.logical == op_b.timestamp.logical
            assert op_a.id != op_b.id
        with trio.fail_after(30):
            while (await server.store.version_vector()).get("node-b") < 2:
                await trio.sleep(0.05)
        a.link.heal()
        dump = await converge(server, a, b, c)
        stored = [op.id for op in await server_operations(server.store)]
    assert stored.index(from_b[0].id) < stored.index(from_a[0].id)
    r1 = dump[COLLECTION]["r1"]
    assert r1["fields"] == {"title": "b", "n": 2}
    assert r1["versions"] == dict.fromkeys(("title", "n"), from_b[0].timestamp.serialize())
    assert dump[COLLECTION]["r3"]["fields"] == {"title": "b3"}
    assert dump[COLLECTION]["r3"]["versions"] == {"title": from_b[1].timestamp.serialize()}


# ---------------------------------------------------------------- clock jump back


async def jump_back_and_restart(
    server: LoopServer, b: Node, path: Path, clock: Clock
) -> tuple[list[Operation], Node]:
    """node-a writes, its clock jumps back 1 h, it writes again, restarts from its file
    with the clock still behind and writes once more (I7 checked on every write); the
    ops ``v1, v2, n2, v3`` and the first incarnation (for its log)."""
    async with open_node(server, "node-a", clock=clock, path=path) as a:
        await a.insert("r1", {"title": "v0", "n": 0})
        await converge(server, a, b)
        await trio.sleep(5)
        v1 = await a.update("r1", {"title": "v1"})
        clock.offset_ms = -3_600_000
        v2 = await a.update("r1", {"title": "v2"})
        n2 = await a.update("r1", {"n": 2})
    # The HLC keeps the wall time it reached and counts up (spec 3.3).
    assert v2.timestamp.wall_time == n2.timestamp.wall_time == v1.timestamp.wall_time
    assert v1.timestamp.logical < v2.timestamp.logical < n2.timestamp.logical
    async with open_node(server, "node-a", clock=clock, path=path, written=a.written) as again:
        v3 = await again.update("r1", {"title": "v3"})  # restarted, still an hour behind
    assert v3.timestamp.sort_key() > n2.timestamp.sort_key()  # the file kept the HLC
    return [v1, v2, n2, v3], again


@pytest.mark.usefixtures("sqlite_in_loop")
async def test_simulation_targeted_client_wall_clock_jumps_back_1_h(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """B1 targeted "a client wall clock that jumps back 1 h": node-a's physical clock goes
    back an hour between two writes, and node-a restarts from its SQLite file with the
    clock still behind.  Its HLC stays monotonic (it keeps the wall time it reached and
    counts up, spec 3.3; the restart reloads it from the file), so its later writes
    still win over its earlier ones; the server accepts the past timestamps (B5); every
    replica converges on node-a's last writes (I1-I7)."""
    path = tmp_path / "a.db"
    clock = Clock()
    async with loop_system() as server, open_node(server, "node-b") as b:
        (_, _, n2, v3), first = await jump_back_and_restart(server, b, path, clock)
        async with open_node(server, "node-a", clock=clock, path=path, written=first.written) as a:
            dump = await converge(server, a, b)
            assert clock() < v3.timestamp.wall_time - 3_000_000  # still an hour behind
    assert dump[COLLECTION]["r1"]["fields"] == {"title": "v3", "n": 2}
    assert dump[COLLECTION]["r1"]["versions"] == {
        "title": v3.timestamp.serialize(),
        "n": n2.timestamp.serialize(),
    }


@pytest.mark.usefixtures("sqlite_in_loop")
async def test_simulation_targeted_client_wall_clock_jumps_back_1_h_then_receives(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """B1 targeted "a client wall clock that jumps back 1 h", receiving side: after the
    jump (and the restart), node-b, whose clock is right, writes; node-a, still an hour
    behind, must apply that write like any other (the server bounds timestamps to its
    own time + 60 s, B5), and node-a's next write, made after it has seen node-b's, is
    ordered after it (HLC receive), so it wins even with node-a's clock an hour behind."""
    path = tmp_path / "a.db"
    clock = Clock()
    async with loop_system() as server, open_node(server, "node-b") as b:
        _, first = await jump_back_and_restart(server, b, path, clock)
        async with open_node(server, "node-a", clock=clock, path=path, written=first.written) as a:
            await converge(server, a, b)
            await trio.sleep(5)
            from_b = await b.update("r1", {"title": "b"})  # node-b's clock is right
            await converge(server, a, b)
            n3 = await a.update("r1", {"n": 3})  # node-a has seen from_b
            assert n3.timestamp.sort_key() > from_b.timestamp.sort_key()
            dump = await converge(server, a, b)
    assert dump[COLLECTION]["r1"]["fields"] == {"title": "b", "n": 3}
    assert dump[COLLECTION]["r1"]["versions"] == {
        "title": from_b.timestamp.serialize(),
        "n": n3.timestamp.serialize(),
    }


# ---------------------------------------------------------------- restart between commit and ack


def ack_dropper(op_id: Callable[[], str | None]) -> tuple[Any, list[str], trio.Event]:
    """A drop predicate that drops the acknowledgment of the batch carrying ``op_id()``
    (once); the ids of the batches that carried it; an event set when the ack is dropped."""
    carriers: list[str] = []
    dropped = trio.Event()

    def predicate(frame: Frame, direction: Direction) -> bool:
        message = frame_json(frame)
        wanted = op_id()
        if direction is Direction.OUTGOING and message.get("type") == "operation-batch":
            if wanted in [op["id"] for op in message["operations"]]:
                carriers.append(message["messageId"])
        elif (
            direction is Direction.INCOMING
            and message.get("type") == "acknowledgment"
            and message.get("acknowledgedMessageId") in carriers[:1]
            and not dropped.is_set()
        ):
            dropped.set()
            return True
        return False

    return predicate, carriers, dropped


async def test_simulation_targeted_server_restart_between_commit_and_ack(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """B1 targeted "server restart between commit and ack": the server commits node-a's
    write and the acknowledgment never reaches node-a, because the server restarts right
    then.  node-a keeps the op queued (L3), reconnects, sends it again, and the server
    recognises it by content id: it is stored once (the "recovered" class of 2.1), the
    queue drains, and node-b holds it once."""
    wanted: list[str] = []
    predicate, carriers, dropped = ack_dropper(lambda: wanted[0] if wanted else None)
    async with (
        loop_system() as server,
        open_node(server, "node-a", chaos=ChaosConfig(drop_predicate=predicate)) as a,
        open_node(server, "node-b") as b,
    ):
        await a.insert("r0", {"title": "before"})
        await converge(server, a, b)
        op = await a.insert("r1", {"title": "committed, never acknowledged"})
        wanted.append(op.id)
        with trio.fail_after(10):
            await dropped.wait()
        assert op.id in {o.id for o in await server_operations(server.store)}
        assert [o.id for o in await a.store.pending()] == [op.id]
        await server.restart()
        await converge(server, a, b)
    assert server.restarts == 1
    assert len(carriers) == 2  # sent, and sent again after the restart
    assert a.count("sync:connected") == 2


@pytest.mark.usefixtures("sqlite_in_loop")
async def test_simulation_targeted_client_restart_between_commit_and_ack(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The client side of "restart between commit and ack": node-a commits a write to its
    SQLite file, the server stores it, and node-a's process dies before the
    acknowledgment reaches it.  Reopened from the same file, node-a still has the op in
    its queue (L1, L3), sends it again, and the server stores it once; the queue drains
    and every replica converges."""
    path = tmp_path / "a.db"
    wanted: list[str] = []
    predicate, carriers, dropped = ack_dropper(lambda: wanted[0] if wanted else None)
    chaos = ChaosConfig(drop_predicate=predicate)
    async with loop_system() as server, open_node(server, "node-b") as b:
        async with open_node(server, "node-a", path=path, chaos=chaos) as a:
            await a.insert("r0", {"title": "before"})
            await converge(server, a, b)
            op = await a.insert("r1", {"title": "committed, never acknowledged"})
            wanted.append(op.id)
            with trio.fail_after(10):
                await dropped.wait()
        # node-a's process is gone; the server has the op.
        assert op.id in {o.id for o in await server_operations(server.store)}
        async with open_node(
            server, "node-a", path=path, chaos=chaos, written=a.written, connect=False
        ) as a:
            assert [o.id for o in await a.store.pending()] == [op.id]
            assert a.engine is not None
            await a.engine.connect()
            dump = await converge(server, a, b)

    assert len(carriers) == 2  # sent by each incarnation
    assert dump[COLLECTION]["r1"]["fields"] == {"title": "committed, never acknowledged"}
