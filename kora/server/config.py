"""Server-level knobs: limits, timeouts and the resolved configuration of one server.

Defaults follow the reference server where it is safe (batch size 100, 256 KiB per operation,
60 s future tolerance) and the security checklist where the reference is not (a connection
cap instead of "unlimited", a handshake timeout, pings, a rate limit with a catch-up burst).
Durations are float seconds.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

__all__ = ["DEFAULT_PORT", "ServerLimits"]

#: The port ``kora serve`` and ``open_server`` bind by default.
DEFAULT_PORT: Final = 8787

_MIB: Final = 1024 * 1024


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _not_negative(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value!r}")


@attrs.frozen(kw_only=True)
class ServerLimits:
    """Limits and timeouts of the sync server.

    Attributes:
        max_message_bytes: Largest WebSocket message or long-poll request body accepted.
            A larger WebSocket message closes the connection with 1009; a larger HTTP body
            gets 413.
        max_operation_bytes: Largest operation (UTF-8 bytes of its JSON), else the operation
            is refused with ``OPERATION_TOO_LARGE``.
        max_batch_operations: Most operations in one client batch, else ``BATCH_TOO_LARGE``
            and the session closes (reference clients send at most 100).
        max_future_ms: How far ahead of the server's clock an operation's wall time may be.
        handshake_timeout: Time from connection to an accepted handshake, else close 4401.
        ping_interval: WebSocket ping period (``None`` disables pings).
        idle_timeout: A connection that sends nothing at all (pongs included) for this long
            is dropped.  Must exceed ``ping_interval`` and ``long_poll_hold``.
        max_connections: Sessions (WebSocket and long-poll together) before new ones are
            refused with ``MAX_CONNECTIONS`` (close 4029, or HTTP 503).  0 means unlimited.
        ops_per_minute: Sustained operation rate per client node (token bucket).  0 disables
            the rate limit.
        ops_burst: Bucket size: how many operations a node may send at once, for example
            when it reconnects with an offline backlog.
        redelivery_interval: How long delivered batches may stay unacknowledged before the
            session re-sends from the last acknowledged delivery sequence.
        long_poll_hold: How long ``GET .../poll`` waits for frames before it answers empty.
        long_poll_session_ttl: A long-poll session with no request for this long expires.
        long_poll_queue_frames: Frames queued for a long-poll client before the session
            waits for it to poll (backpressure; nothing is dropped).
        auth_revalidate_interval: How often a session's token is checked again with the
            auth provider (also at the token's ``AuthContext.expires_at``); a token the
            provider refuses by then closes its session with 4401.
        shutdown_timeout: How long graceful shutdown waits for sessions to finish the batch
            in progress before they are cut.
    """

    max_message_bytes: int = attrs.field(default=4 * _MIB, validator=_positive)
    max_operation_bytes: int = attrs.field(default=256 * 1024, validator=_positive)
    max_batch_operations: int = attrs.field(default=1000, validator=_positive)
    max_future_ms: int = attrs.field(default=60_000, validator=_not_negative)
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    ping_interval: float | None = 20.0
    idle_timeout: float = attrs.field(default=60.0, validator=_positive)
    max_connections: int = attrs.field(default=1000, validator=_not_negative)
    ops_per_minute: int = attrs.field(default=2000, validator=_not_negative)
    ops_burst: int = attrs.field(default=10_000, validator=_positive)
    redelivery_interval: float = attrs.field(default=2.0, validator=_positive)
    long_poll_hold: float = attrs.field(default=25.0, validator=_positive)
    long_poll_session_ttl: float = attrs.field(default=60.0, validator=_positive)
    long_poll_queue_frames: int = attrs.field(default=1000, validator=_positive)
    shutdown_timeout: float = attrs.field(default=10.0, validator=_positive)
    auth_revalidate_interval: float = attrs.field(default=60.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.ping_interval is not None and self.ping_interval >= self.idle_timeout:
            raise ValueError("idle_timeout must be longer than ping_interval")
        if self.long_poll_hold >= self.idle_timeout:
            raise ValueError("idle_timeout must be longer than long_poll_hold")
