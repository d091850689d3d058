"""Per-client operation rate limit: a token bucket keyed by the client's node id.

The reference limits each *connection* to 600 operations per fixed minute, so a reconnect
resets it and a 10,000-operation offline backlog takes 17 minutes to drain.  Here the bucket
belongs to the client node (it survives reconnects) and is large (a catch-up burst), and it
refills continuously.  A batch is admitted or refused as a whole, so a refused batch changes
nothing and the client can simply resend it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Final

__all__ = ["OperationRateLimiter"]

#: Buckets remembered at most; the least recently used one is forgotten first (a forgotten
#: bucket starts full again, which only ever errs towards admitting).
MAX_TRACKED_CLIENTS: Final = 10_000


class OperationRateLimiter:
    """Token buckets of ``burst`` operations refilled at ``per_minute / 60`` per second.

    Args:
        per_minute: Sustained rate; 0 disables the limit.
        burst: Bucket size.
        clock: Seconds, monotonic (``trio.current_time`` in the server).
    """

    def __init__(self, *, per_minute: int, burst: int, clock: Callable[[], float]) -> None:
        self.per_second = per_minute / 60.0
        self.burst = float(burst)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.per_second)

    def try_acquire(self, key: str, count: int) -> float:
        """Take ``count`` tokens for ``key`` if the batch may pass.

        A batch larger than the whole bucket is admitted when the bucket is full (it could
        never pass otherwise) and leaves the bucket in debt.

        Returns:
            0.0 if admitted, else the seconds to wait before the batch would pass.
        """
        if not self.enabled or count <= 0:
            return 0.0
        now = self._clock()
        level = self._level(key, now)
        needed = min(float(count), self.burst)
        if level < needed:
            self._remember(key, level, now)
            return (needed - level) / self.per_second
        self._remember(key, level - count, now)
        return 0.0

    def _remember(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > MAX_TRACKED_CLIENTS:
            self._buckets.popitem(last=False)
