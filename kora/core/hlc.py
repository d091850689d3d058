"""Hybrid logical clock timestamps (spec 3.3).

``HLCTimestamp`` is the value type; the clock itself (``now``/``receive``) lives beside it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

import attrs

from kora.core.errors import InvalidTimestampError, RemoteClockDriftError

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
        if len(parts) < 3 or not all(p.isascii() and p.isdigit() for p in parts[:2]):
            raise InvalidTimestampError(f"not a serialized HLC timestamp: {text!r}")
        ts = cls(int(parts[0]), int(parts[1]), ":".join(parts[2:]))
        ts.validate()
        return ts


#: Drift of the clock ahead of (reference-corrected) physical time that is worth a warning.
DRIFT_WARN_MS = 60_000
#: Drift that counts as an error (reported only; ``now()`` never refuses to tick).
DRIFT_ERROR_MS = 5 * 60_000
#: How far a received timestamp may be ahead of corrected physical time (spec 3.3).
MAX_REMOTE_AHEAD_MS = 5 * 60_000
#: How far ahead of the server's clock an ingested operation may be (spec 8.4).
MAX_INGEST_FUTURE_MS = 60_000


def system_clock_ms() -> int:
    """Integer milliseconds since the epoch, like JS ``Date.now()``."""
    return time.time_ns() // 1_000_000


class DriftLevel(enum.StrEnum):
    """How far the clock runs ahead of corrected physical time."""

    OK = "ok"
    WARN = "warn"  # more than DRIFT_WARN_MS ahead
    ERROR = "error"  # more than DRIFT_ERROR_MS ahead


def _is_int(value: object) -> bool:
    return type(value) is int


def _validate_remote(remote: HLCTimestamp) -> None:
    if not isinstance(remote, HLCTimestamp):
        raise InvalidTimestampError(f"not an HLC timestamp: {remote!r}")
    if (
        not _is_int(remote.wall_time)
        or not _is_int(remote.logical)
        or remote.wall_time < 0
        or remote.logical < 0
        or remote.logical > MAX_LOGICAL
        # Stricter than the reference: a wall time we could never serialize would poison
        # this clock for good.
        or remote.wall_time >= MAX_WALL_TIME
        or not isinstance(remote.node_id, str)
    ):
        raise InvalidTimestampError(
            f"invalid remote HLC timestamp: wallTime={remote.wall_time!r} "
            f"logical={remote.logical!r} nodeId={remote.node_id!r}"
        )


class HybridLogicalClock:
    """The hybrid logical clock of one node (spec 3.3), with the reference's exact rules.

    Not thread-safe and not async: the owner serializes calls (a store transaction does).
    The physical clock is injectable so tests can drive time by hand.

    Args:
        node_id: The owner's node id, stamped into every timestamp.
        physical_clock: Returns integer ms since the epoch; defaults to ``system_clock_ms``.
        last: The last timestamp this node issued (persisted by the store), so that a
            restarted clock never goes backwards.
        on_drift: Called with ``(level, drift_ms)`` after ``now``/``receive`` whenever the
            clock runs more than ``DRIFT_WARN_MS`` ahead of corrected physical time.
    """

    def __init__(
        self,
        node_id: str,
        physical_clock: Callable[[], int] | None = None,
        *,
        last: HLCTimestamp | None = None,
        on_drift: Callable[[DriftLevel, int], None] | None = None,
    ) -> None:
        if not isinstance(node_id, str) or not node_id:
            raise ValueError("node_id must be a non-empty string")
        self._node_id = node_id
        self._physical_clock = physical_clock or system_clock_ms
        self._on_drift = on_drift
        self._wall = 0
        self._logical = 0
        self._reference_offset: int | None = None
        if last is not None:
            last.validate()
            self._wall, self._logical = last.wall_time, last.logical

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def last(self) -> HLCTimestamp | None:
        """The latest timestamp issued or merged, or None before the first one."""
        if self._wall == 0 and self._logical == 0:
            return None
        return HLCTimestamp(self._wall, self._logical, self._node_id)

    @property
    def reference_offset(self) -> int | None:
        """``serverTime - localTime`` in ms, once known."""
        return self._reference_offset

    def set_reference_offset(self, offset_ms: int | None) -> None:
        """Record how far the server's clock is ahead of ours (``serverTime - localTime``).

        Fed from the handshake's ``serverTime``.  It widens what ``receive`` accepts from a
        correct server when our own clock is slow, and corrects drift reports.
        """
        if offset_ms is not None and not _is_int(offset_ms):
            raise TypeError(f"reference offset must be an int of ms, got {offset_ms!r}")
        self._reference_offset = offset_ms

    def corrected_physical_time(self) -> int:
        """Physical time plus the reference offset (0 when unknown)."""
        return self._physical() + (self._reference_offset or 0)

    def drift_ms(self) -> int:
        """How far the clock's wall time is ahead of corrected physical time (may be < 0)."""
        return self._wall - self.corrected_physical_time()

    def drift_level(self) -> DriftLevel:
        return _level(self.drift_ms())

    def now(self) -> HLCTimestamp:
        """A timestamp for a local event, strictly greater than every earlier one.

        Never raises: a clock that runs far ahead is only reported (``on_drift``).
        """
        physical = self._physical()
        if physical > self._wall:
            self._wall, self._logical = physical, 0
        else:
            self._tick(self._logical + 1)
        self._report_drift(physical)
        return HLCTimestamp(self._wall, self._logical, self._node_id)

    def receive(self, remote: HLCTimestamp) -> HLCTimestamp:
        """Merge a timestamp received from another node; return the new local timestamp.

        Raises:
            InvalidTimestampError: If ``remote`` has non-integer or negative fields, a logical
                counter above ``MAX_LOGICAL`` or a wall time that cannot be serialized.
            RemoteClockDriftError: If ``remote`` is more than ``MAX_REMOTE_AHEAD_MS`` ahead of
                corrected physical time.  Skipped on a cold start (the clock has never ticked)
                when no reference offset is known, since then nothing tells whose clock is
                wrong.  The clock is unchanged when this is raised.
        """
        _validate_remote(remote)
        physical = self._physical()
        cold_start = self._wall == 0 and self._logical == 0
        if not (cold_start and self._reference_offset is None):
            limit = physical + (self._reference_offset or 0) + MAX_REMOTE_AHEAD_MS
            if remote.wall_time > limit:
                raise RemoteClockDriftError(
                    f"remote timestamp {remote.wall_time} is {remote.wall_time - limit} ms "
                    f"beyond the allowed {MAX_REMOTE_AHEAD_MS} ms ahead of local time"
                )
        wall, remote_wall = self._wall, remote.wall_time
        if physical > wall and physical > remote_wall:
            self._wall, self._logical = physical, 0
        elif remote_wall > wall:
            self._wall = remote_wall
            self._tick(remote.logical + 1)
        elif wall == remote_wall:
            self._tick(max(self._logical, remote.logical) + 1)
        else:
            self._tick(self._logical + 1)
        self._report_drift(physical)
        return HLCTimestamp(self._wall, self._logical, self._node_id)

    def advance_to(self, timestamp: HLCTimestamp) -> None:
        """Move the clock up to ``timestamp`` (never backwards); used after a rebase."""
        timestamp.validate()
        if (timestamp.wall_time, timestamp.logical) > (self._wall, self._logical):
            self._wall, self._logical = timestamp.wall_time, timestamp.logical

    def _physical(self) -> int:
        # Whole milliseconds, as Date.now(); a float from an injected clock would leak into
        # the wire's integer wallTime otherwise.
        return int(self._physical_clock())

    def _tick(self, logical: int) -> None:
        # The counter has 5 decimal digits on the wire; overflow borrows a millisecond.
        if logical > MAX_LOGICAL:
            self._wall, self._logical = self._wall + 1, 0
        else:
            self._logical = logical

    def _report_drift(self, physical: int) -> None:
        if self._on_drift is None:
            return
        drift = self._wall - (physical + (self._reference_offset or 0))
        level = _level(drift)
        if level is not DriftLevel.OK:
            self._on_drift(level, drift)


def _level(drift_ms: int) -> DriftLevel:
    if drift_ms > DRIFT_ERROR_MS:
        return DriftLevel.ERROR
    if drift_ms > DRIFT_WARN_MS:
        return DriftLevel.WARN
    return DriftLevel.OK


def check_ingest_bounds(
    timestamp: HLCTimestamp,
    now_ms: int,
    max_future_ms: int = MAX_INGEST_FUTURE_MS,
    *,
    operation_id: str | None = None,
) -> None:
    """The server's per-op timestamp check at ingest (spec 8.4 step 3).

    Args:
        timestamp: The operation's timestamp.
        now_ms: The server's physical time in ms.
        max_future_ms: How far ahead of ``now_ms`` the wall time may be.
        operation_id: When given, the error message is the reference's wire message.

    Raises:
        InvalidTimestampError: If a field is out of range or the wall time is more than
            ``max_future_ms`` ahead of ``now_ms``.
    """
    timestamp.validate()
    if timestamp.wall_time > now_ms + max_future_ms:
        if operation_id is not None:
            raise InvalidTimestampError(
                f'Operation "{operation_id}" timestamp is too far in the future'
            )
        raise InvalidTimestampError(
            f"timestamp wallTime {timestamp.wall_time} is more than {max_future_ms} ms "
            f"ahead of now ({now_ms})"
        )
