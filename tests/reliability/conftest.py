"""Fixtures of the reliability batteries (B1-B7): nothing shared yet beyond the harnesses."""
