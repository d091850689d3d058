"""Hybrid logical clock timestamps (spec 3.3).

``HLCTimestamp`` is the value type; the clock itself (``now``/``receive``) lives beside it.
"""

from __future__ import annotations

import attrs

from kora.core.errors import InvalidTimestampError

MAX_LOGICAL = 99_999
MAX_WALL_TIME = 10**15  # exclusive: the serialized form pads the wall time to 15 digits


def utf16_key(text: str) -> bytes:
    """Sort key that orders strings by UTF-16 code units, as JavaScript's ``<`` does."""
    return text.encode("utf-16-be", "surrogatepass")


@attrs.frozen(order=False)
class HLCTimestamp:
    """A point in hybrid logical time: integer-ms wall time, logical counter, owner node id."""

    wall_time: int
    logical: int
    node_id: str

    def sort_key(self) -> tuple[int, int, bytes]:
        return (self.wall_time, self.logical, utf16_key(self.node_id))

    def __lt__(self, other: HLCTimestamp) -> bool:
        return self.sort_key() < other.sort_key()

    def __le__(self, other: HLCTimestamp) -> bool:
        return self.sort_key() <= other.sort_key()

    def __gt__(self, other: HLCTimestamp) -> bool:
        return self.sort_key() > other.sort_key()

    def __ge__(self, other: HLCTimestamp) -> bool:
        return self.sort_key() >= other.sort_key()

    def validate(self) -> None:
        """Raise ``InvalidTimestampError`` unless the fields are in the spec's ranges."""
        if (
            type(self.wall_time) is not int
            or type(self.logical) is not int
            or not 0 <= self.wall_time < MAX_WALL_TIME
            or not 0 <= self.logical <= MAX_LOGICAL
            or not isinstance(self.node_id, str)
        ):
            raise InvalidTimestampError(
                f"invalid HLC timestamp: wallTime={self.wall_time!r} logical={self.logical!r}"
            )

    def serialize(self) -> str:
        """``<wall:15 digits>:<logical:5 digits>:<node id>``; sorts like the total order."""
        self.validate()
        return f"{self.wall_time:015d}:{self.logical:05d}:{self.node_id}"

    @classmethod
    def parse(cls, text: str) -> HLCTimestamp:
        """Inverse of ``serialize``; node ids may contain colons."""
        parts = text.split(":")
        if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise InvalidTimestampError(f"not a serialized HLC timestamp: {text!r}")
        ts = cls(int(parts[0]), int(parts[1]), ":".join(parts[2:]))
        ts.validate()
        return ts
