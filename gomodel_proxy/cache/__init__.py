"""The response cache: exact-match keys, stores in memory or Redis."""
