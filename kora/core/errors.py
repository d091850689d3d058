"""The one error hierarchy of Kora for Python.

Every boundary (store, transport, server, codec) maps what its library raises into these
classes with ``raise KoraError(...) from exc``.  Two splits matter to callers:

* *Local* errors mean that this process misused an API or a state machine (a bug here).
* *Remote* errors mean that a peer or its data misbehaved (handle, report, keep running).

``trio.Cancelled`` is never wrapped in any of them.
"""

from __future__ import annotations


class KoraError(Exception):
    """Base class of every error Kora raises on purpose."""


class LocalError(KoraError):
    """This process misused an API (wrong argument, wrong state)."""


class RemoteError(KoraError):
    """A peer, or data that came from one, misbehaved."""

    #: Stable machine-readable code, also used on the wire where one applies.
    code: str = "REMOTE_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class ValidationError(LocalError, ValueError):
    """A value does not satisfy the schema or the operation invariants."""


class InvalidTimestampError(RemoteError, ValueError):
    """A hybrid logical clock timestamp is malformed or out of range (spec 3.3)."""

    code = "INVALID_TIMESTAMP"


class RemoteClockDriftError(RemoteError):
    """A remote timestamp is further ahead of our physical clock than allowed (spec 3.3)."""

    code = "CLOCK_DRIFT"


class CausalCycleError(RemoteError):
    """The causal dependencies of a set of operations form a cycle (spec 4.6)."""

    code = "CAUSAL_CYCLE"


class ClosedError(LocalError):
    """The resource was closed by this process and cannot be used any more."""


class BrokenError(KoraError):
    """The resource was broken by something outside this process (a dropped connection)."""


class MalformedOperationError(RemoteError, ValueError):
    """An operation received from a peer has a missing field or one of the wrong shape.

    Attributes:
        field: The wire (camelCase) path of the offending field, e.g. ``timestamp.wallTime``.
    """

    code = "INVALID_OPERATION"

    def __init__(self, message: str, *, field: str, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field


class SchemaValidationError(ValidationError):
    """A record's data does not match the collection's schema.

    Attributes:
        collection: The collection name.
        field: The field name, or None when the problem is not about one field.
        expected: What the schema wanted, in words (e.g. ``"string"``).
        given: What was given, as a short repr (None when the field was missing).
    """

    def __init__(
        self,
        message: str,
        *,
        collection: str,
        field: str | None = None,
        expected: str | None = None,
        given: str | None = None,
    ) -> None:
        super().__init__(message)
        self.collection = collection
        self.field = field
        self.expected = expected
        self.given = given
