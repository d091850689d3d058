"""Pure merge: fold operations into record state (per-field LWW, atomic ops, tombstones).

No I/O here (enforced by import-linter).  See ``kora.merge.fold`` for the rules.
"""

from kora.merge.fold import OutOfOrderError, RecordDraft, apply, fold, is_newer
from kora.merge.record_state import RecordState

__all__ = ["OutOfOrderError", "RecordDraft", "RecordState", "apply", "fold", "is_newer"]
