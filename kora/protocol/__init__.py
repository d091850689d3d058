"""Sans-I/O sync protocol: messages, codecs, session state machines, limits."""
