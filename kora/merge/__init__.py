"""Pure merge: fold operations into record state (per-field LWW, atomic ops, tombstones)."""
