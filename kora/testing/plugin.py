"""The pytest plugin registered under the ``pytest11`` entry point.

Fixtures are added here as the sync engine and server land; importing this module must stay
cheap because pytest loads it in every project that has kora-sync installed.
"""
