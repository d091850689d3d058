"""The sync server: ASGI app on hypercorn, sessions, hub, server stores, auth, scopes."""
