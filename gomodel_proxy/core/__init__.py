"""Contracts shared by every layer: typed payloads, errors and interfaces.

Nothing in here imports from the rest of the package, so any layer may depend on it.
"""
