"""What a session sends to its client: the delivery stream and the legacy delta (spec 4.3, 4.4).

Delivery stream (clients that send ``lastDeliverySequence``, i.e. every reference client)
--------------------------------------------------------------------------------------------

The store numbers committed operations 1, 2, 3, ... (the *delivery sequence*).  A client's
watermark ``W`` says "I have applied everything visible to me up to ``W``".  From ``W`` the
session scans the store in chunks of ``5 * batch_size`` to its end and sends the operations
visible to the session in batches of ``batch_size``:

* the first batch has ``baseDeliverySequence = W``, each next one the previous batch's max
  (the client applies a batch only when its base equals its watermark);
* ``maxDeliverySequence`` is the delivery sequence of the batch's last operation, except on the
  final batch, where it is ``max(last scanned, last op)``: an invisible tail is skipped, so the
  watermark moves past it and it is never scanned again for this client;
* the final batch has ``isFinal``; there is no ``cursor``/``totalBatches``;
* with nothing visible, one empty batch ``{base: W, max: last scanned}`` is sent when the
  caller asks for it (after the handshake, always: the client only starts streaming after a
  final batch), or when the invisible run is long (so a quiet tenant's watermark keeps up
  with a busy store instead of re-scanning the same operations on every wake-up);
* the client's own operations are skipped when ``W > 0`` (it has them); with ``W = 0`` it is
  restoring and gets them too.

Memory stays bounded: one scan chunk and one pending batch, whatever the backlog.

Two shortcuts leave the batches exactly as they are and only save reads:

* chunks come from the hub's window of recent commits when it covers them
  (``Hub.read_recent``), from the store otherwise;
* a session remembers the run of its client's own operations right after its sent position
  (``OwnRun``).  Without it, a client that writes a lot would make its session decode its own
  operations again on every wake-up, only to skip them, until an empty batch moves its
  watermark past them.  Whether an operation is the client's own never changes, unlike its
  visibility (a scope can depend on a record's current fields), so only that run is
  remembered, never an invisible one.

``recent_delivery`` is the same stream computed at once, without I/O, when the window has every
chunk and the scope needs no record read; it declines (``None``, nothing changed) otherwise.
A session woken by a commit it is caught up to takes it and sends without a task switch.

Legacy delta (clients that omit ``lastDeliverySequence``)
--------------------------------------------------------

The operations the server's version vector has beyond the client's, visible to the session,
in causal order, after the delta cursor's operation if it is found, in batches with
``batchIndex``/``totalBatches``/``cursor``; one empty final batch when there is nothing.  This
path loads the whole delta in memory, like the reference; it exists for old clients only.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import attrs

from kora.core.operation import Operation
from kora.core.version_vector import VersionVector, compute_delta
from kora.server.stores.base import DeliveredOperation, ServerStore

__all__ = [
    "DeliveryBatch",
    "KnownVisibility",
    "LegacyBatch",
    "OwnRun",
    "RecentReader",
    "VisibilityCheck",
    "decode_delta_cursor",
    "delivery_stream",
    "encode_delta_cursor",
    "legacy_delta",
    "recent_delivery",
]

VisibilityCheck = Callable[[Operation], Awaitable[bool]]
"""``await visible(op)``: may this session receive ``op``?"""

KnownVisibility = Callable[[Operation], "bool | None"]
"""``visible_now(op)``: may this session receive ``op``, or ``None`` if that needs the store."""

RecentReader = Callable[[int, int], "list[DeliveredOperation] | None"]
"""``read(after, limit)``: ``operations_after_delivery`` from memory, or ``None`` (read the
store); see ``Hub.read_recent``."""


@attrs.define
class OwnRun:
    """Delivery sequences ``start + 1 .. through`` hold only the client's own operations.

    A fact about the log that stays true, so a scan that starts anywhere in
    ``start .. through - 1`` may go on after ``through`` at once (when the client's own
    operations are excluded).
    """

    start: int = 0
    through: int = 0


@attrs.frozen
class DeliveryBatch:
    """One delivery batch, ready to become an ``operation-batch`` message."""

    operations: tuple[Operation, ...]
    base: int
    max: int
    is_final: bool
    batch_index: int


@attrs.frozen
class LegacyBatch:
    """One batch of the legacy version-vector delta."""

    operations: tuple[Operation, ...]
    is_final: bool
    batch_index: int
    total_batches: int
    cursor: str | None


class _Planner:
    """The batching of ``delivery_stream``, fed one scanned operation at a time (no I/O)."""

    __slots__ = ("base", "batch_size", "cursor", "index", "own_through", "pending")

    def __init__(self, after: int, cursor: int, batch_size: int) -> None:
        self.batch_size = batch_size
        self.cursor = cursor
        self.own_through = cursor  # the scan so far found only the client's own ops up to here
        self.base = after
        self.pending: list[DeliveredOperation] = []
        self.index = 0

    def own(self, delivered: DeliveredOperation) -> None:
        """``delivered`` is the client's own (skipped)."""
        if self.own_through == delivered.delivery_sequence - 1:
            self.own_through += 1

    def visible(self, delivered: DeliveredOperation) -> DeliveryBatch | None:
        """``delivered`` is visible; the batch that it proves not final, if one is full."""
        pending = self.pending
        full = None
        if len(pending) == self.batch_size:
            # Another visible op exists, so the pending batch is not the final one.
            last = pending[-1].delivery_sequence
            full = DeliveryBatch(
                tuple(d.operation for d in pending), self.base, last, False, self.index
            )
            self.base, self.index, pending = last, self.index + 1, []
            self.pending = pending
        pending.append(delivered)
        return full

    def finish(
        self,
        after: int,
        *,
        finalize_when_empty: bool,
        threshold: int,
        own_run: OwnRun | None,
    ) -> DeliveryBatch | None:
        """The final batch (if any) once the scan reached the end of the log at ``cursor``."""
        cursor = self.cursor
        if own_run is not None and self.own_through > after:
            own_run.start, own_run.through = after, self.own_through
        scanned = cursor - after  # the log has no gaps: every sequence in between was looked at
        pending = self.pending
        if pending:
            last = max(cursor, pending[-1].delivery_sequence)
            return DeliveryBatch(
                tuple(d.operation for d in pending), self.base, last, True, self.index
            )
        if finalize_when_empty or (threshold and scanned >= threshold):
            # (``pending`` is only ever empty here when no batch was yielded at all.)
            return DeliveryBatch((), after, cursor, True, 0)
        return None


def _scan_start(after: int, exclude_node: str | None, own_run: OwnRun | None) -> int:
    if (
        exclude_node is not None
        and own_run is not None
        and own_run.start <= after < own_run.through
    ):
        return own_run.through  # (after, through] are the client's own: skipped anyway
    return after


async def delivery_stream(
    store: ServerStore,
    *,
    after: int,
    batch_size: int,
    visible: VisibilityCheck,
    exclude_node: str | None,
    finalize_when_empty: bool,
    skip_threshold: int | None = None,
    scan_chunk: int | None = None,
    recent: RecentReader | None = None,
    own_run: OwnRun | None = None,
) -> AsyncIterator[DeliveryBatch]:
    """Yield the delivery batches from watermark ``after`` to the store's current end.

    Args:
        store: Where to read.
        after: The client's watermark (the base of the first batch).
        batch_size: Operations per batch.
        visible: The session's read-scope check.
        exclude_node: Skip this node's operations (the client's own), or ``None``.
        finalize_when_empty: With nothing visible, still send the empty final batch.
        skip_threshold: With nothing visible, send the empty batch anyway once this many
            operations were scanned (default: one scan chunk).  ``0`` disables it.
        scan_chunk: Operations read per store call (default ``5 * batch_size``).
        recent: Reads chunks from memory when it can (the store otherwise).
        own_run: The session's run of its client's own operations: used to start the scan
            after it, and updated to the run found after ``after`` (with ``exclude_node``).

    Yields:
        Batches in order; the last one has ``is_final``.  Nothing at all when there is
        nothing visible and the empty batch is not wanted.
    """
    chunk_size = scan_chunk if scan_chunk is not None else 5 * batch_size
    threshold = chunk_size if skip_threshold is None else skip_threshold
    planner = _Planner(after, _scan_start(after, exclude_node, own_run), batch_size)
    while True:
        chunk = recent(planner.cursor, chunk_size) if recent is not None else None
        if chunk is None:
            chunk = await store.operations_after_delivery(planner.cursor, chunk_size)
        for delivered in chunk:
            if exclude_node is not None and delivered.operation.node_id == exclude_node:
                planner.own(delivered)
            elif await visible(delivered.operation):
                full = planner.visible(delivered)
                if full is not None:
                    yield full
        if chunk:
            planner.cursor = chunk[-1].delivery_sequence
        if len(chunk) < chunk_size:
            break
    final = planner.finish(
        after,
        finalize_when_empty=finalize_when_empty,
        threshold=threshold,
        own_run=own_run if exclude_node is not None else None,
    )
    if final is not None:
        yield final


def recent_delivery(
    recent: RecentReader,
    *,
    after: int,
    batch_size: int,
    visible_now: KnownVisibility,
    exclude_node: str | None,
    finalize_when_empty: bool,
    skip_threshold: int | None = None,
    scan_chunk: int | None = None,
    own_run: OwnRun | None = None,
) -> list[DeliveryBatch] | None:
    """``delivery_stream``'s batches, computed at once from memory, or ``None``.

    ``None`` (and nothing changed, ``own_run`` included) when a chunk is not in the window
    of recent commits or an operation's visibility needs the store: then run
    ``delivery_stream``, which gives the same batches.  A caught-up session woken by a
    commit takes this path: no store call, no task switch until it sends.

    Args:
        visible_now: The session's read-scope check when it needs no store read
            (``None``: it does).
        (the others as for ``delivery_stream``)
    """
    chunk_size = scan_chunk if scan_chunk is not None else 5 * batch_size
    threshold = chunk_size if skip_threshold is None else skip_threshold
    planner = _Planner(after, _scan_start(after, exclude_node, own_run), batch_size)
    batches: list[DeliveryBatch] = []
    cursor = planner.cursor
    while True:
        chunk = recent(cursor, chunk_size)
        if chunk is None:
            return None
        for delivered in chunk:
            if exclude_node is not None and delivered.operation.node_id == exclude_node:
                planner.own(delivered)
                continue
            seen = visible_now(delivered.operation)
            if seen is None:
                return None
            if seen:
                full = planner.visible(delivered)
                if full is not None:
                    batches.append(full)
        if chunk:
            cursor = planner.cursor = chunk[-1].delivery_sequence
        if len(chunk) < chunk_size:
            break
    final = planner.finish(
        after,
        finalize_when_empty=finalize_when_empty,
        threshold=threshold,
        own_run=own_run if exclude_node is not None else None,
    )
    if final is not None:
        batches.append(final)
    return batches


def encode_delta_cursor(last_operation_id: str, batch_index: int) -> str:
    """The reference's delta cursor: base64url (no padding) of compact JSON (spec 4.8)."""
    text = json.dumps(
        {"lastOperationId": last_operation_id, "batchIndex": batch_index}, separators=(",", ":")
    )
    return base64.urlsafe_b64encode(text.encode("utf-8")).rstrip(b"=").decode("ascii")


def decode_delta_cursor(cursor: str | None) -> tuple[str, int] | None:
    """``(lastOperationId, batchIndex)``, or ``None`` for any malformed cursor (spec 4.8)."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError):
        return None
    if not isinstance(decoded, dict):
        return None
    last_id = decoded.get("lastOperationId")
    batch_index = decoded.get("batchIndex")
    if not isinstance(last_id, str) or type(batch_index) is not int:
        return None
    return last_id, batch_index


async def legacy_delta(
    store: ServerStore,
    *,
    client_vector: VersionVector,
    batch_size: int,
    visible: VisibilityCheck,
    delta_cursor: str | None,
) -> list[LegacyBatch]:
    """The legacy version-vector delta of spec 4.3, as a list of batches (never empty)."""
    server_vector = await store.version_vector()
    ranges = server_vector.missing_ranges(client_vector)
    fetched: dict[tuple[str, int, int], list[Operation]] = {}
    for node, (first, last) in ranges.items():
        fetched[(node, first, last)] = await store.operations_in_range(node, first, last)
    ordered = compute_delta(
        server_vector, client_vector, lambda node, first, last: fetched[(node, first, last)]
    )
    ops = [op for op in ordered if await visible(op)]
    resume = decode_delta_cursor(delta_cursor)
    start_index = 0
    if resume is not None:
        last_id, start_index = resume
        ids = [op.id for op in ops]
        if last_id in ids:
            ops = ops[ids.index(last_id) + 1 :]
    return _legacy_batches(ops, batch_size, start_index if not ops else 0)


def _legacy_batches(
    ops: Sequence[Operation], batch_size: int, empty_index: int
) -> list[LegacyBatch]:
    if not ops:
        return [LegacyBatch((), True, empty_index, 1, None)]
    chunks = [tuple(ops[i : i + batch_size]) for i in range(0, len(ops), batch_size)]
    total = len(chunks)
    return [
        LegacyBatch(chunk, i == total - 1, i, total, encode_delta_cursor(chunk[-1].id, i))
        for i, chunk in enumerate(chunks)
    ]
