"""Random ids (24 hex characters, 96 random bits from ``os.urandom``), drawn from a pool.

A production request takes three of them (its request id, its usage record's call id, its audit entry's id):
one ``getrandom`` system call each when drawn one by one. The pool draws 512 ids in one call and hands them
out; the ids are the same kind of value as ``os.urandom(12).hex()`` (not secrets: they are sent to clients and
stored). A forked child empties its pool, so parent and child never hand out the same id.
"""

from __future__ import annotations

import os

#: Ids drawn per system call.
_BATCH = 512
_pool: list[str] = []


def _refill() -> None:
    raw = os.urandom(12 * _BATCH).hex()
    _pool.extend([raw[i:i + 24] for i in range(0, len(raw), 24)])


def random_id() -> str:
    """24 random hex characters: what ``os.urandom(12).hex()`` gives, at a fraction of its cost."""
    try:
        return _pool.pop()
    except IndexError:  # once per 512 ids (and safe when another thread took the last one meanwhile)
        _refill()
        return _pool.pop()


os.register_at_fork(after_in_child=_pool.clear)
