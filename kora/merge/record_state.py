"""``RecordState``: what folding a record's operations yields."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from kora.core.json_types import JsonValue
from kora.core.operation import AtomicOpType


@attrs.frozen
class RecordState:
    """The materialized state of one record after folding its operations.

    The mappings are plain dicts that must be treated as immutable: ``fold`` and ``apply``
    always build new ones.

    Attributes:
        collection: The record's collection.
        record_id: The record's id.
        fields: Field name to current value.  A deleted record keeps its pre-delete fields,
            because a later update merges onto them (spec 3.7).
        field_versions: Field name to the serialized HLC of the operation that wrote the
            field's current value (for a composed atomic chain, its last writer).
        field_atomic: Field name to the atomic op type of the field's last writer when that
            writer was an atomic op.  The next atomic op of the same type composes onto the
            running value instead of overwriting it.  Like the reference fold, an entry
            survives an insert that does not mention the field.
        deleted: True when the newest insert/update/delete of the record is a delete.
        version: Serialized HLC of the newest operation folded in.
        created_version: Serialized HLC of the oldest operation folded in.
        last_op_id: Id of the newest operation folded in (makes re-applying it a no-op).
    """

    collection: str
    record_id: str
    fields: Mapping[str, JsonValue]
    field_versions: Mapping[str, str]
    field_atomic: Mapping[str, AtomicOpType]
    deleted: bool
    version: str
    created_version: str
    last_op_id: str
