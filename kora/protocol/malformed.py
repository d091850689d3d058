"""Operations of a received batch that did not decode, reported one by one.

A server refuses a malformed operation with ``operation-rejected`` and goes on with the rest
of its batch (spec 8.4 checks each operation in turn), instead of refusing the whole frame.
That needs the operation's ``id``, ``collection`` and ``recordId`` (the three fields of the
rejection), so only an operation that names itself with three strings can be set aside; any
other malformed operation still fails the frame.
"""

from __future__ import annotations

from typing import Any

import attrs

from kora.protocol.errors import RemoteProtocolError
from kora.protocol.limits import MAX_SAFE_INTEGER

__all__ = ["MalformedOperation"]


@attrs.frozen
class MalformedOperation:
    """One operation of a batch that does not decode, and what identifies it.

    Attributes:
        index: Its position in the batch as sent.
        id: Its ``id``, as sent.
        collection: Its ``collection``, as sent.
        record_id: Its ``recordId``, as sent.
        sequence_number: Its ``sequenceNumber`` if that is a safe non-negative integer
            (the acknowledgment of a batch that ends with it reports it), else ``None``.
        code: The ``RemoteProtocolError`` code that refused it (``INVALID_OPERATION`` or
            ``OPERATION_TOO_LARGE``).
        reason: Why, for people.
    """

    index: int
    id: str
    collection: str
    record_id: str
    sequence_number: int | None
    code: str
    reason: str

    @classmethod
    def named(cls, index: int, wire: Any, error: RemoteProtocolError) -> MalformedOperation | None:
        """The malformed operation ``wire`` at ``index``, or ``None`` if it cannot be named."""
        if type(wire) is not dict:
            return None
        names = (wire.get("id"), wire.get("collection"), wire.get("recordId"))
        if not all(type(name) is str for name in names):
            return None
        seq = wire.get("sequenceNumber")
        usable = type(seq) is int and 0 <= seq <= MAX_SAFE_INTEGER
        return cls(
            index=index,
            id=names[0],  # type: ignore[arg-type]
            collection=names[1],  # type: ignore[arg-type]
            record_id=names[2],  # type: ignore[arg-type]
            sequence_number=seq if usable else None,
            code=error.code,
            reason=str(error),
        )
