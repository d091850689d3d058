"""OTP-style supervision on trio nurseries (general purpose; imports nothing from kora)."""
