"""Generated protobuf code of the kora-pb1 wire format (do not edit; see regenerate.py)."""
