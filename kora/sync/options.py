"""``SyncOptions``: how an app syncs, under the Kora docs' option names in snake_case."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Final, Literal, TypeAlias

import attrs

from kora.sync.transport import TransportFactory

__all__ = [
    "DEFAULT_WINDOW",
    "AuthCallable",
    "SyncOptions",
    "TransportChoice",
    "WireFormatChoice",
]

#: Our batches that may await acknowledgment at once.  Measured in docs/sync.md: beyond 4 the
#: gain on a loopback server is within noise; the reference keeps exactly 1.
DEFAULT_WINDOW: Final = 4

#: Returns the token for the next connection attempt (awaited on every attempt); None sends
#: no token.
AuthCallable: TypeAlias = Callable[[], Awaitable[str | None]]

TransportChoice: TypeAlias = Literal["websocket", "long-polling"] | TransportFactory
WireFormatChoice: TypeAlias = Literal["json", "kora-pb1", "auto"]

_TRANSPORTS: Final = ("websocket", "long-polling")
_WIRE_FORMATS: Final = ("json", "kora-pb1", "auto")


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, not {value!r}")


def _seconds(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{attribute.name} must be a finite number of seconds > 0, not {value!r}")


def _transport(
    instance: object, attribute: attrs.Attribute[TransportChoice], value: TransportChoice
) -> None:
    if value in _TRANSPORTS or callable(value):
        return
    raise ValueError(
        f"transport must be 'websocket', 'long-polling' or a transport factory, not {value!r}"
    )


def _wire_format(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in _WIRE_FORMATS:
        raise ValueError(f"wire_format must be one of {_WIRE_FORMATS}, not {value!r}")


def _url(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"url must be a non-empty string, not {value!r}")


@attrs.frozen(kw_only=True)
class SyncOptions:
    """How an app syncs with a server; pass to ``kora.open_app(..., sync=SyncOptions(...))``.

    Attributes:
        url: The server, e.g. ``"ws://127.0.0.1:8787/"`` (WebSocket) or
            ``"http://127.0.0.1:8787"`` (long-polling; a ``ws`` URL is converted).
        auth: Async callable returning the token for the next attempt; awaited on *every*
            connection attempt, so it may refresh tokens.  None sends no token.
        batch_size: Operations per outgoing batch (the reference's ``batchSize``).
        schema_version: Our schema version, sent in the handshake.
        auto_reconnect: Reconnect by itself after a dropped connection or failed attempt.
        reconnect_interval: Delay before the second attempt, seconds; doubles after that.
        max_reconnect_interval: Cap of the delay, seconds.
        reconnect_jitter: Fraction of each delay taken off at random (0: the exact table).
        transport: ``"websocket"``, ``"long-polling"`` or a transport factory (a callable
            returning an async context manager that yields a
            :class:`~kora.sync.transport.Transport`; called once per attempt).
        wire_format: ``"auto"`` (offer ``kora-pb1``, speak JSON unless the server selects
            it: a Kora.js server answers ``"json"``), ``"json"`` (only JSON, as Kora.js) or
            ``"kora-pb1"`` (a server that does not select it is an error).
        window: Our batches that may await acknowledgment at once.
        ack_timeout: Seconds to wait for the acknowledgment of a batch before the connection
            is considered dead and reopened.
        connect_timeout: Seconds allowed to open the transport and, separately, to get the
            handshake-response.
        max_message_size: Largest frame accepted from the server, bytes (WebSocket).
        poll_interval: Long-polling: pause between polls after an empty one, seconds.
    """

    url: str = attrs.field(validator=_url)
    auth: AuthCallable | None = None
    batch_size: int = attrs.field(default=100, validator=_positive_int)
    schema_version: int = attrs.field(default=1, validator=_positive_int)
    auto_reconnect: bool = True
    reconnect_interval: float = attrs.field(default=1.0, validator=_seconds)
    max_reconnect_interval: float = attrs.field(default=30.0, validator=_seconds)
    reconnect_jitter: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    transport: TransportChoice = attrs.field(default="websocket", validator=_transport)
    #: ``"auto"``: our server then sends ``kora-pb1``, which costs both ends less CPU per
    #: operation than JSON (a fresh client's 100,000-record sync: about a third less server
    #: CPU); a Kora.js server selects JSON for a client that does not list ``"protobuf"``.
    wire_format: WireFormatChoice = attrs.field(default="auto", validator=_wire_format)
    window: int = attrs.field(default=DEFAULT_WINDOW, validator=_positive_int)
    ack_timeout: float = attrs.field(default=30.0, validator=_seconds)
    connect_timeout: float = attrs.field(default=10.0, validator=_seconds)
    max_message_size: int = attrs.field(default=16 * 1024 * 1024, validator=_positive_int)
    poll_interval: float = attrs.field(default=0.25, validator=_seconds)
