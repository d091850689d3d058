"""The App facade: ``open_app()`` with collections, queries, watch, events and sync."""
