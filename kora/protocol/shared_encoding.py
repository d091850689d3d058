"""Encoded operations shared by the many sessions that send them (a server's fan-out).

A server relays each committed operation to every session that may see it: 200 sessions,
200 ``operation-batch`` frames holding the same operations.  Each frame has its own
``messageId`` and delivery sequences, but the operations' part of it is the same bytes every
time, so ``SharedEncodings`` keeps it and the codecs build each frame around it:

* JSON: each operation's text (``json_stringify`` of its wire object), by operation, so that
  sessions whose scopes let through different subsets of a commit still share every
  operation they send.  The frame is the envelope's text around the joined operations,
  byte-identical to ``JsonCodec.encode`` of the same message.
* ``kora-pb1``: the operations of a whole batch share the frame's string table, node table
  and deltas, so the unit is the batch: its operations field, its tables and the string
  table, by the batch's operations.  The frame is the message id, the batch's per-session
  scalars and these parts, byte-identical to ``BinaryCodec.encode`` as well.

Entries are found by operation id and used only for the same operation (the same object, or
an equal one: an id hashes most fields, not all of them, so equality is checked rather than
assumed).  Both caches are bounded by count and bytes; the oldest entries go first, and an
operation or batch larger than a sixteenth of the byte budget is encoded without caching.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from kora.core.canonical import json_stringify
from kora.core.operation import Operation
from kora.core.operations import operation_to_wire

__all__ = ["BinaryBatchParts", "SharedEncodings"]

#: Operations whose JSON text is kept at most (a few seconds of a busy server's commits).
DEFAULT_MAX_OPERATIONS: Final = 4096
#: Batches whose kora-pb1 parts are kept at most.
DEFAULT_MAX_BATCHES: Final = 256
#: Bytes of JSON text, and separately of kora-pb1 parts, kept at most.
DEFAULT_MAX_BYTES: Final = 4 * 1024 * 1024


class BinaryBatchParts:
    """The parts of a ``kora-pb1`` operation batch that do not depend on the session.

    ``operations``: the ``OperationBatch.operations`` fields (field 1), ``tables``: its
    ``nodes`` and ``members`` fields (8, 9), ``strings``: the ``Envelope.strings`` fields
    (14), each as serialized bytes.
    """

    __slots__ = ("operations", "size", "strings", "tables")

    def __init__(self, operations: bytes, tables: bytes, strings: bytes) -> None:
        self.operations = operations
        self.tables = tables
        self.strings = strings
        self.size = len(operations) + len(tables) + len(strings)


_BuildParts = Callable[[tuple[Operation, ...]], BinaryBatchParts]


def _same(cached: Sequence[Operation], wanted: Sequence[Operation]) -> bool:
    return len(cached) == len(wanted) and all(
        a is b or a == b for a, b in zip(cached, wanted, strict=True)
    )


class SharedEncodings:
    """Operation encodings computed once and reused by every session that sends them.

    Pass one instance to every ``ServerSession`` of a server (``shared_encodings=``); the
    frames do not change, only the work to build them.  Not thread-safe (one event loop).

    Args:
        max_operations: JSON texts kept at most.
        max_batches: ``kora-pb1`` batches kept at most.
        max_bytes: Bytes kept at most, for each of the two caches.
    """

    def __init__(
        self,
        *,
        max_operations: int = DEFAULT_MAX_OPERATIONS,
        max_batches: int = DEFAULT_MAX_BATCHES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._max_operations = max_operations
        self._max_batches = max_batches
        self._max_bytes = max_bytes
        self._json: dict[str, tuple[Operation, str]] = {}
        # The ids of ``_json`` oldest first: ``next(iter(dict))`` after many deletions walks
        # every deleted slot up to the next resize, a few microseconds per trimmed entry.
        self._json_order: deque[str] = deque()
        self._json_bytes = 0
        self._binary: dict[tuple[str, ...], tuple[tuple[Operation, ...], BinaryBatchParts]] = {}
        self._binary_bytes = 0
        #: Look-ups answered from the caches, and encodings computed (for tests and metrics).
        self.hits = 0
        self.misses = 0

    def operation_json(self, op: Operation) -> str:
        """``json_stringify(operation_to_wire(op))``, computed once per operation.

        Raises:
            TypeError, ValueError: As ``json_stringify`` (the codecs turn them into
                ``LocalProtocolError``).
        """
        entry = self._json.get(op.id)
        if entry is not None and (entry[0] is op or entry[0] == op):
            self.hits += 1
            return entry[1]
        self.misses += 1
        text = json_stringify(operation_to_wire(op))
        self._keep_json(op, text, entry)
        return text

    def remember_json(self, op: Operation, text: str) -> None:
        """Keep ``text``, which must be ``json_stringify(operation_to_wire(op))``, for the
        frames that will relay ``op``: a server measured it on the way in (spec 8.4)."""
        self._keep_json(op, text, self._json.get(op.id))

    def _keep_json(self, op: Operation, text: str, entry: tuple[Operation, str] | None) -> None:
        size = len(text)
        if size * 16 > self._max_bytes:
            return
        if entry is None:
            self._json_order.append(op.id)
        else:
            self._json_bytes -= len(entry[1])
        self._json[op.id] = (op, text)
        self._json_bytes += size
        self._trim_json()

    def binary_batch(
        self, operations: tuple[Operation, ...], build: _BuildParts
    ) -> BinaryBatchParts:
        """The ``kora-pb1`` parts of a batch of ``operations``, built by ``build`` once."""
        key = tuple(op.id for op in operations)
        entry = self._binary.get(key)
        if entry is not None and (entry[0] is operations or _same(entry[0], operations)):
            self.hits += 1
            return entry[1]
        self.misses += 1
        parts = build(operations)
        if parts.size * 16 <= self._max_bytes:
            if entry is not None:
                self._binary_bytes -= entry[1].size
            self._binary[key] = (operations, parts)
            self._binary_bytes += parts.size
            self._trim_binary()
        return parts

    def clear(self) -> None:
        self._json.clear()
        self._json_order.clear()
        self._binary.clear()
        self._json_bytes = self._binary_bytes = 0

    @property
    def held_bytes(self) -> int:
        return self._json_bytes + self._binary_bytes

    def __len__(self) -> int:
        return len(self._json) + len(self._binary)

    def _trim_json(self) -> None:
        cache = self._json
        order = self._json_order
        while cache and (len(cache) > self._max_operations or self._json_bytes > self._max_bytes):
            self._json_bytes -= len(cache.pop(order.popleft())[1])

    def _trim_binary(self) -> None:
        cache = self._binary
        while cache and (len(cache) > self._max_batches or self._binary_bytes > self._max_bytes):
            oldest = next(iter(cache))
            self._binary_bytes -= cache.pop(oldest)[1].size
