"""Shared counters for limits: rate-limit token buckets and their state in memory or Redis."""
