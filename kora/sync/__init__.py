"""The client sync engine: supervised actors, transports, status, events."""
