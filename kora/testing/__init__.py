"""Test tooling for apps built on Kora: fixtures, chaos transport, partitions."""
