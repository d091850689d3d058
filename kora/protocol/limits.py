"""Input limits that both codecs enforce on every frame they decode."""

from __future__ import annotations

import attrs

__all__ = ["DEFAULT_LIMITS", "MAX_SAFE_INTEGER", "Limits"]

#: Largest integer a JavaScript peer represents exactly (2**53 - 1).  Every counter of the
#: protocol (sequence numbers, delivery sequences, wall times) must stay at or below it.
MAX_SAFE_INTEGER = 2**53 - 1


def _positive(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"Limits.{attribute.name} must be a positive int, got {value!r}")


@attrs.frozen(kw_only=True)
class Limits:
    """What a decoder accepts at most.  Exceeding a limit raises a ``RemoteProtocolError``.

    Attributes:
        max_frame_bytes: Size of one frame in bytes (UTF-8 for text frames).
        max_operations_per_batch: Operations in one ``operation-batch``.
        max_operation_bytes: Size of one operation: its compact JSON in UTF-8 for the JSON
            codec (as the reference server measures it, spec 8.4), its encoded bytes for the
            binary codec.
        max_version_vector_entries: Entries in a version vector.
        max_nesting_depth: Depth of nested arrays/objects in a whole frame (the message
            object itself is depth 1).  Checked before any recursive code runs.
    """

    max_frame_bytes: int = attrs.field(default=4 * 1024 * 1024, validator=_positive)
    max_operations_per_batch: int = attrs.field(default=1000, validator=_positive)
    max_operation_bytes: int = attrs.field(default=256 * 1024, validator=_positive)
    max_version_vector_entries: int = attrs.field(default=10_000, validator=_positive)
    max_nesting_depth: int = attrs.field(default=64, validator=_positive)


DEFAULT_LIMITS = Limits()
