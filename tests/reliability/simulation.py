"""B1: the deterministic convergence simulation (one seed = one run).

Everything runs in one trio loop under ``MockClock(autojump_threshold=0)``: the server's
real sessions (``kora.testing.LoopServer`` over a ``MemoryServerStore``), 5 clients each
running the real sync engine (``kora.sync.open_sync``) over a ``MemoryStore``, and between
them ``NetworkLink`` (partitions) around ``chaos_transport`` (drop, duplicate, reorder,
delay).  Time is virtual and every random draw comes from the seed, so a failing seed
replays.  A client "crash-restart" cancels its engine and starts a new one on the same
store: the store is the client's disk (a MemoryStore commits atomically in the loop; the
SQLite file path is covered by the SIGKILL loops instead, because worker threads would
make virtual time nondeterministic).

Timeline (virtual seconds 0..``duration``): each client's operations at random moments,
20 partitions of random client subsets (1-30 s), 10 client restarts, 5 server restarts and
one swizzle-clog (clients cut one by one, healed in random order).  Then every fault
ends (links healed, chaos off) and the replicas must converge within 60 s.

Invariants checked (reliability.md B1):

* I1 canonical dumps byte-identical on every client and the server;
* I2 equal op-id sets, equal to every locally committed operation (lost = unexpected = {});
* I3 no duplicate ids in any log;
* I4 equal version vectors, equal to the contiguous maximum per node, never decreasing at
  any sampled point;
* I5 values equal an independent last-writer-wins oracle over the union log;
* I6 empty outbound queues, no rejected operations;
* I7 HLC: each node's timestamps strictly increase, and a write is stamped after
  everything its node had seen;
* I8 convergence within 60 s (virtual) after the last fault, with at most 3 connections
  per client in that window.  Converged means: no queued operations, equal version
  vectors, the same op-id set and the same dump on every replica (vectors alone are a
  per-node maximum and pass gaps, spec 4.1).

A seed is a function of itself alone (``deterministic``), and ``Trace`` hashes what a run
did, so a failing seed replays bit for bit, in any process, after any other seed.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, Final

import attrs
import trio
import trio.lowlevel

import kora.core.ids
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType
from kora.server import MemoryServerStore
from kora.store import Store
from kora.store.errors import RecordExistsError, RecordNotFoundError
from kora.store.memory import open_memory_store
from kora.store.values import LocalMutation
from kora.sync import SyncOptions, open_sync
from kora.sync.transport import Frame, Transport, TransportFactory
from kora.testing import ChaosConfig, NetworkLink, chaos_transport, open_loop_server
from kora.testing.chaos import ChaosStats
from kora.testing.loop_server import EPOCH_MS
from kora.testing.replicas import (
    Dump,
    digest,
    server_dump,
    server_operations,
    store_dump,
    store_operations,
)

COLLECTIONS: Final = ("todos", "notes", "tags")
RECORDS_PER_COLLECTION: Final = 50
HOT_RECORDS: Final = 10
CONVERGE_WITHIN: Final = 60.0
MAX_CONNECTIONS_AFTER_HEAL: Final = 3

FAULTS: Final = ChaosConfig(drop_rate=0.10, duplicate_rate=0.05, reorder_rate=0.20, max_delay=2.0)
QUIET: Final = ChaosConfig()


@attrs.frozen(kw_only=True)
class Profile:
    """The shape of one run (the T0 defaults of reliability.md B1)."""

    clients: int = 5
    operations: int = 400  # per client
    duration: float = 150.0  # virtual seconds of workload (denser writes: more conflicts)
    partitions: int = 20
    client_restarts: int = 10
    server_restarts: int = 5
    swizzles: int = 1
    skew_ms: tuple[int, int] = (-120_000, 50_000)
    wire_format: Any = "kora-pb1"
    max_burst: int = 7  # writes at one instant: 1..max_burst (mean 4)


@attrs.define
class Counts:
    operations: int = 0
    partitions: int = 0
    client_restarts: int = 0
    server_restarts: int = 0
    swizzles: int = 0
    chaos_faults: int = 0
    converge_seconds: float = 0.0
    trace: str = ""  # the hash of the run's trace (see Trace)


def dyadic(seconds: float) -> float:
    """``seconds`` rounded to 1/1024 s, so that sums of virtual times stay exact.

    The engine compares deadlines it computed as ``start + timeout`` with ``now - start``;
    with arbitrary floats the two can disagree by one ulp (see
    test_sync_findings.py).  Dyadic times keep every such sum exact.
    """
    return round(seconds * 1024) / 1024


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Make a run inside the ``with`` block a function of ``seed`` alone.

    Whatever ran before in the process must not matter, and three things would let it:

    * trio's scheduler: each batch of runnable tasks runs in the order the tasks were
      woken, or reversed at random.  That order follows memory addresses: timeouts that
      expire at the same virtual instant (common here, times are dyadic) are taken in
      ``id(cancel_scope)`` order, and a cancelled scope wakes its tasks in set order.
      With ``_ALLOW_DETERMINISTIC_SCHEDULING`` (what trio does under Hypothesis) each batch
      is sorted by task creation order before it is shuffled with ``trio._core._run._r``,
      which we seed;
    * ``kora.core.ids.uuid7`` (message ids, the server's node id) reads the real clock and
      ``secrets``: it is replaced by a seeded generator;
    * string hashes: the worker runs with ``PYTHONHASHSEED=0``.
    """
    run = trio._core._run
    generator = type(kora.core.ids.uuid7)
    saved = run._ALLOW_DETERMINISTIC_SCHEDULING, generator.__call__, run._r.getstate()
    counter = itertools.count(random.Random(seed).getrandbits(60))

    def seeded_uuid7(self: object) -> str:
        # A well-formed UUIDv7 at EPOCH_MS; increasing, like the real ones.
        value = (EPOCH_MS << 80) | (0x7 << 76) | (0b10 << 62) | next(counter)
        text = f"{value:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

    run._r.seed(seed)
    run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    generator.__call__ = seeded_uuid7  # type: ignore[method-assign]
    try:
        yield
    finally:
        run._ALLOW_DETERMINISTIC_SCHEDULING = saved[0]  # type: ignore[misc]
        generator.__call__ = saved[1]  # type: ignore[method-assign]
        run._r.setstate(saved[2])


class SimulationFailure(AssertionError):
    """An invariant failed; the message names the seed."""


class Trace:
    """What a run did, in order: a running hash, and optionally the lines themselves.

    Every frame the server sends or receives (on the server's side of the chaos), every
    timeline event and every engine event but ``sync:status`` goes in, stamped with the
    virtual time, so two runs of a seed share the hash only if they made the same
    schedule.  It ends at the verdict (the teardown after it is of no interest).
    """

    def __init__(self, keep_lines: bool = False) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.lines: list[str] | None = [] if keep_lines else None
        self.events = 0
        self.closed = False

    def note(self, text: str, frame: Frame | None = None) -> None:
        if self.closed:
            return
        line = f"{trio.current_time():.6f} {text}"
        self._hash.update(line.encode())
        self.events += 1
        if frame is not None:
            data = frame.encode() if isinstance(frame, str) else frame
            self._hash.update(data)
            if self.lines is not None:
                line += f" {len(data)} {hashlib.blake2b(data, digest_size=6).hexdigest()}"
        if self.lines is not None:
            self.lines.append(line)

    def close(self, verdict: str) -> None:
        self.note(verdict)
        self.closed = True

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _TracedTransport:
    def __init__(self, inner: Transport, trace: Trace, name: str) -> None:
        self._inner = inner
        self._trace = trace
        self._name = name

    async def send(self, frame: Frame) -> None:
        self._trace.note(f"{self._name} >", frame)
        await self._inner.send(frame)

    async def receive(self) -> Frame:
        frame = await self._inner.receive()
        self._trace.note(f"{self._name} <", frame)
        return frame

    async def aclose(self) -> None:
        await self._inner.aclose()


def traced(inner: TransportFactory, trace: Trace, client: int) -> TransportFactory:
    """``inner`` whose connections note every frame in ``trace``."""
    connections = itertools.count(1)

    @asynccontextmanager
    async def connect() -> AsyncIterator[Transport]:
        name = f"c{client}.{next(connections)}"
        trace.note(f"{name} open")
        async with inner() as transport:
            yield _TracedTransport(transport, trace, name)

    return connect


@attrs.define
class SimClient:
    index: int
    store: Store
    link: NetworkLink
    options: SyncOptions
    rng: random.Random
    engine_scope: trio.CancelScope | None = None
    connections: int = 0
    written: list[Operation] = attrs.field(factory=list)
    apply_failures: list[str] = attrs.field(factory=list)
    vv_samples: dict[str, int] = attrs.field(factory=dict)


def _oracle(ops: list[Operation]) -> dict[tuple[str, str], dict[str, Any]]:
    """The expected record states, folded from the union log as spec 3.7 words it.

    Written from the spec, not from ``kora.merge``: operations in HLC order (wall time,
    logical, node id); insert sets the record to its data; update sets each field to its
    data value, except that an increment whose field was last written by an increment
    composes onto the running value; delete tombstones, a later insert or update
    un-deletes.
    """
    by_record: dict[tuple[str, str], list[Operation]] = defaultdict(list)
    for op in ops:
        by_record[(op.collection, op.record_id)].append(op)
    result = {}
    for key, record_ops in by_record.items():
        record_ops.sort(key=lambda o: (o.timestamp.wall_time, o.timestamp.logical, o.node_id))
        fields: dict[str, Any] = {}
        writers: dict[str, str] = {}
        deleted = False
        for op in record_ops:
            if op.type is OpType.DELETE:
                deleted = True
                continue
            deleted = False
            if op.type is OpType.INSERT:
                fields = dict(op.data or {})
                writers = dict.fromkeys(fields, "plain")
                continue
            atomic = op.atomic_ops or {}
            for name, value in (op.data or {}).items():
                intent = atomic.get(name)
                if intent is not None and writers.get(name) == intent.type:
                    assert intent.type is AtomicOpType.INCREMENT
                    fields[name] = fields[name] + intent.value
                else:
                    fields[name] = value
                writers[name] = intent.type if intent is not None else "plain"
        result[key] = {"fields": fields, "deleted": deleted}
    return result


class Simulation:
    def __init__(self, seed: int, profile: Profile, trace: Trace | None = None) -> None:
        self.seed = seed
        self.trace = trace if trace is not None else Trace()
        self.profile = profile
        self.rng = random.Random(seed)
        self.counts = Counts()
        self.chaos: ChaosConfig = FAULTS
        self.chaos_stats = ChaosStats()
        self.clients: list[SimClient] = []
        self.server: Any = None
        self.nursery: trio.Nursery | None = None

    def fail(self, message: str) -> SimulationFailure:
        self.trace.close(f"failed: {message}")
        return SimulationFailure(f"seed {self.seed}: {message}")

    def now_ms(self) -> int:
        return EPOCH_MS + int(trio.current_time() * 1000)

    # ------------------------------------------------------------ setup

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            server_store = await stack.enter_async_context(MemoryServerStore())
            self.server = await stack.enter_async_context(
                open_loop_server(server_store, clock_ms=self.now_ms)
            )
            self.nursery = await stack.enter_async_context(trio.open_nursery())
            for index in range(self.profile.clients):
                skew = self.rng.randint(*self.profile.skew_ms)
                store = await stack.enter_async_context(
                    open_memory_store(
                        node_id=f"node-{index}-{self.seed}",
                        physical_clock=lambda skew=skew: self.now_ms() + skew,  # type: ignore[misc]
                    )
                )
                chaos = chaos_transport(
                    traced(self.server.connect, self.trace, index),
                    lambda: self.chaos,
                    seed=self.rng.getrandbits(64),
                    stats=self.chaos_stats,
                )
                link = NetworkLink(chaos)
                options = SyncOptions(
                    url="memory://",
                    transport=link,
                    reconnect_interval=0.5,
                    max_reconnect_interval=4.0,
                    ack_timeout=8.0,
                    connect_timeout=4.0,
                    wire_format=self.profile.wire_format,
                )
                client = SimClient(
                    index, store, link, options, random.Random(self.rng.getrandbits(64))
                )
                self.clients.append(client)
                await self.nursery.start(self.run_engine, client)
            try:
                yield
            finally:
                self.nursery.cancel_scope.cancel()

    async def run_engine(self, client: SimClient, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as scope:
            client.engine_scope = scope
            events = {"sync:connected"}

            def emit(name: str, payload: Any) -> None:
                if name != "sync:status":  # half of all events, and derived from the others
                    self.trace.note(f"c{client.index} {name}")
                if name in events:
                    client.connections += 1
                elif name == "sync:apply-failed" and len(client.apply_failures) < 20:
                    client.apply_failures.append(repr(dict(payload))[:300])

            async with open_sync(client.store, client.options, emit=emit) as engine:
                await engine.connect()
                task_status.started()
                await trio.sleep_forever()

    async def restart_client(self, client: SimClient) -> None:
        assert client.engine_scope is not None
        assert self.nursery is not None
        client.engine_scope.cancel()
        await trio.lowlevel.checkpoint()
        await self.nursery.start(self.run_engine, client)
        self.counts.client_restarts += 1

    # ------------------------------------------------------------ workload

    def record_id(self, rng: random.Random, hot: bool = False) -> tuple[str, str]:
        collection = rng.choice(COLLECTIONS)
        index = rng.randrange(HOT_RECORDS if hot else RECORDS_PER_COLLECTION)
        return collection, f"{collection}-{index}"

    async def write_burst(self, client: SimClient, count: int) -> None:
        for _ in range(count):
            await self.write_one(client)

    async def write_one(self, client: SimClient) -> None:
        rng = client.rng
        store = client.store
        draw = rng.random()
        hot = 0.90 <= draw < 0.95
        collection, record_id = self.record_id(rng, hot=hot)
        current = await store.get(collection, record_id, include_deleted=True)
        value = rng.randrange(1_000_000)
        if current is None or current.deleted:
            # insert (a tombstone re-inserted is the resurrection case)
            mutation = LocalMutation.insert(
                collection,
                {"title": f"t{value}", "n": value, "hot": value, "done": False},
                record_id=record_id,
            )
        elif draw < 0.40 or hot:
            mutation = LocalMutation.update(
                collection, record_id, {"hot" if hot else "title": f"v{value}"}
            )
        elif draw < 0.60:
            mutation = LocalMutation.update(
                collection,
                record_id,
                {"title": f"m{value}", "n": value, "done": rng.random() < 0.5},
            )
        elif draw < 0.75:
            mutation = LocalMutation.update(collection, record_id, {"n": value})
        elif draw < 0.85:
            mutation = LocalMutation.delete(collection, record_id)
        elif draw < 0.90:
            mutation = LocalMutation.update(collection, record_id, {"done": True})
        else:
            mutation = LocalMutation.update(
                collection,
                record_id,
                atomic={"count": AtomicOp(AtomicOpType.INCREMENT, rng.randint(1, 5))},
            )
        before = await store.last_timestamp()
        try:
            op = await store.write_local(mutation)
        except (RecordExistsError, RecordNotFoundError):
            return  # a remote op changed the record meanwhile; draw again next time
        if before is not None and (op.timestamp.wall_time, op.timestamp.logical) <= (
            before.wall_time,
            before.logical,
        ):
            raise self.fail(f"I7: node {store.node_id} stamped {op.timestamp} after {before}")
        client.written.append(op)
        self.counts.operations += 1

    async def sample_vectors(self) -> None:
        for client in self.clients:
            vector = (await client.store.version_vector()).to_wire()
            for node, seq in vector.items():
                if seq < client.vv_samples.get(node, 0):
                    raise self.fail(f"I4: client {client.index}'s vector went back for {node}")
                client.vv_samples[node] = seq

    def timeline(self) -> list[tuple[float, int, Callable[[], Any]]]:
        p = self.profile
        rng = self.rng
        events: list[tuple[float, int, Callable[[], Any]]] = []
        order = iter(range(10**9))

        def at(when: float, action: Callable[[], Any]) -> None:
            events.append((dyadic(when), next(order), action))

        for client in self.clients:
            left = p.operations
            while left:  # bursts of 1..max_burst writes at one instant, as apps write
                burst = min(left, rng.randint(1, p.max_burst))
                left -= burst
                at(rng.uniform(0, p.duration), lambda c=client, n=burst: self.write_burst(c, n))
        for _ in range(p.partitions):
            start = rng.uniform(0, p.duration)
            length = rng.uniform(1, 30)
            cut = rng.sample(self.clients, rng.randint(1, len(self.clients)))
            at(start, lambda cut=cut: self.cut(cut, count=True))
            at(start + length, lambda cut=cut: self.heal(cut))
        for _ in range(p.client_restarts):
            victim = rng.choice(self.clients)
            at(rng.uniform(0, p.duration), lambda c=victim: self.restart_client(c))
        for _ in range(p.server_restarts):
            at(rng.uniform(0, p.duration), self.restart_server)
        for _ in range(p.swizzles):
            start = rng.uniform(0, p.duration)
            order_cut = rng.sample(self.clients, len(self.clients))
            order_heal = rng.sample(self.clients, len(self.clients))
            for step, client in enumerate(order_cut):
                at(start + step, lambda c=client: self.cut([c]))
            for step, client in enumerate(order_heal):
                at(start + len(order_cut) + 5 + step, lambda c=client: self.heal([c]))
            self.counts.swizzles += 1
        events.sort(key=lambda e: (e[0], e[1]))
        return events

    async def cut(self, clients: list[SimClient], *, count: bool = False) -> None:
        for client in clients:
            client.link.cut()
        if count:
            self.counts.partitions += 1

    async def heal(self, clients: list[SimClient]) -> None:
        for client in clients:
            client.link.heal()

    async def restart_server(self) -> None:
        await self.server.restart()
        self.counts.server_restarts += 1

    # ------------------------------------------------------------ checks

    async def converged(self) -> bool:
        for client in self.clients:
            if await client.store.pending_count():
                return False
        vectors = [(await c.store.version_vector()).to_wire() for c in self.clients]
        server_vector = (await self.server.store.version_vector()).to_wire()
        if any(v != server_vector for v in vectors):
            return False
        # Equal vectors are not enough: a vector is each node's highest sequence number
        # (spec 4.1), so it passes a gap, and an operation still on its way to a client
        # can be under it already.  (Seed 183 once stopped waiting here while client 3
        # lacked 21 of node-2's operations, the server having stored node-2's later batch
        # first; they arrived 3 s later.  Its dump agreed: those writes were superseded.)
        server_ids = {op.id for op in await server_operations(self.server.store)}
        for client in self.clients:
            if {op.id for op in await store_operations(client.store)} != server_ids:
                return False
        dumps = [await store_dump(c.store, COLLECTIONS) for c in self.clients]
        return all(d == dumps[0] for d in dumps) and dumps[0] == await server_dump(
            self.server.store, COLLECTIONS
        )

    async def check(self) -> None:
        server_store = self.server.store
        server_log = await server_operations(server_store)
        server_ids = [op.id for op in server_log]
        if len(server_ids) != len(set(server_ids)):
            raise self.fail("I3: the server log holds duplicate ids")
        committed = {op.id for c in self.clients for op in c.written}
        if set(server_ids) - committed:
            raise self.fail(f"I2: unexpected ops on the server: {len(set(server_ids) - committed)}")
        if committed - set(server_ids):
            raise self.fail(f"I2: lost ops: {len(committed - set(server_ids))}")
        server_dumped: Dump = await server_dump(server_store, COLLECTIONS)
        expected_digest = digest(server_dumped)
        server_vector = (await server_store.version_vector()).to_wire()
        per_node: dict[str, list[Operation]] = defaultdict(list)
        for op in server_log:
            per_node[op.node_id].append(op)
        for node, ops in per_node.items():
            ops.sort(key=lambda o: o.sequence_number)
            seqs = [o.sequence_number for o in ops]
            if seqs != list(range(1, len(seqs) + 1)) or server_vector[node] != len(seqs):
                raise self.fail(f"I4: {node}'s log is not contiguous or its vector is off")
            for earlier, later in itertools.pairwise(ops):
                if (later.timestamp.wall_time, later.timestamp.logical) <= (
                    earlier.timestamp.wall_time,
                    earlier.timestamp.logical,
                ):
                    raise self.fail(f"I7: {node}'s timestamps do not increase")
        for client in self.clients:
            ops = await store_operations(client.store)
            ids = [op.id for op in ops]
            if len(ids) != len(set(ids)):
                raise self.fail(f"I3: client {client.index} holds duplicate ids")
            if set(ids) != set(server_ids):
                by_id = {op.id: op for op in [*ops, *server_log]}
                missing = sorted(
                    (by_id[i].node_id, by_id[i].sequence_number) for i in set(server_ids) - set(ids)
                )
                extra = sorted(
                    (by_id[i].node_id, by_id[i].sequence_number) for i in set(ids) - set(server_ids)
                )
                raise self.fail(
                    f"I2: client {client.index}'s op set differs from the server's: it lacks "
                    f"{missing[:10]} ({len(missing)}) and has {extra[:10]} ({len(extra)}) more "
                    "(node, sequence); the version vectors were equal; its apply failures: "
                    f"{client.apply_failures}"
                )
            if (await client.store.version_vector()).to_wire() != server_vector:
                raise self.fail(f"I4: client {client.index}'s version vector differs")
            dumped = await store_dump(client.store, COLLECTIONS)
            if digest(dumped) != expected_digest:
                raise self.fail(f"I1: client {client.index}'s dump differs from the server's")
            if await client.store.pending_count():
                raise self.fail(f"I6: client {client.index} still has queued operations")
            if await client.store.rejected_operations():
                raise self.fail(f"I6: client {client.index} has rejected operations")
        oracle = _oracle(server_log)
        for (collection, record_id), expected in oracle.items():
            got = server_dumped.get(collection, {}).get(record_id)
            if got is None or {k: got[k] for k in ("fields", "deleted")} != expected:
                history = "\n".join(
                    f"  {o.timestamp.serialize()} {o.type} data={o.data} atomic="
                    f"{ {k: (str(v.type), v.value) for k, v in (o.atomic_ops or {}).items()} }"
                    for o in sorted(
                        (
                            o
                            for o in server_log
                            if (o.collection, o.record_id) == (collection, record_id)
                        ),
                        key=lambda o: o.timestamp.sort_key(),
                    )
                )
                raise self.fail(
                    f"I5: {collection}/{record_id} is {got}, the oracle says {expected}; "
                    f"its operations in HLC order:\n{history}"
                )

    # ------------------------------------------------------------ run

    async def run(self) -> Counts:
        async with self.running():
            start = trio.current_time()
            for index, (when, _, action) in enumerate(self.timeline()):
                await trio.sleep_until(start + when)
                self.trace.note(f"event {index}")
                await action()
                await self.sample_vectors()
            # The last fault: heal everything, stop the chaos, count connections from here.
            await self.heal(self.clients)
            self.chaos = QUIET
            self.counts.chaos_faults = self.chaos_stats.faults
            healed_at = trio.current_time()
            connections = [c.connections for c in self.clients]
            with trio.move_on_after(CONVERGE_WITHIN) as waiting:
                while not await self.converged():
                    await trio.sleep(0.25)
            if waiting.cancelled_caught:
                raise self.fail(f"I8: no convergence within {CONVERGE_WITHIN} s after healing")
            self.counts.converge_seconds = trio.current_time() - healed_at
            for client, before in zip(self.clients, connections, strict=True):
                if client.connections - before > MAX_CONNECTIONS_AFTER_HEAL:
                    raise self.fail(
                        f"I8: client {client.index} needed {client.connections - before} "
                        "connections after healing"
                    )
            await self.check()
            await self.sample_vectors()
            self.trace.close(f"passed {digest(await server_dump(self.server.store, COLLECTIONS))}")
        self.counts.trace = self.trace.hexdigest()
        return self.counts


async def simulate(seed: int, profile: Profile | None = None, trace: Trace | None = None) -> Counts:
    """Run one seed; raises ``SimulationFailure`` (naming the seed) if an invariant fails."""
    return await Simulation(seed, profile or Profile(), trace).run()


__all__ = ["Counts", "Profile", "SimulationFailure", "Trace", "deterministic", "simulate"]
