"""Long background batches cut into slices, with the event loop served between two slices.

A background task that builds or encodes a batch of 500 entries in one go holds the loop for
milliseconds, and every request that is ready meanwhile waits that long: it shows as the p99 of the
requests, not in their CPU cost. Cut into slices of a few dozen items, the same work costs the same CPU,
and no request waits longer than one slice.

Unless the task is behind: on a saturated loop a turn lasts as long as all the requests ready in it, and a
batch that waits a turn per slice is handled slower than the next ones arrive. ``hurry`` (asked at each
slice boundary) says so, typically "another full batch waits"; the turn is then skipped, and the backlog
is caught up at once, as it would be without slices.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")

#: Items handled between two turns of the loop: about 0.1-0.3 ms of building or encoding.
SLICE = 64


def never() -> bool:
    """The default ``hurry``: never behind."""
    return False


async def sliced(items: Sequence[T], size: int = SLICE, hurry: Callable[[], bool] = never
                 ) -> AsyncIterator[Sequence[T]]:
    """``items`` in consecutive slices of ``size``; the loop runs what is ready before each slice but the
    first, unless ``hurry()``."""
    for start in range(0, len(items), size):
        if start and not hurry():
            await asyncio.sleep(0)
        yield items[start:start + size]


async def paced(items: Iterable[T], size: int = SLICE, hurry: Callable[[], bool] = never) -> AsyncIterator[T]:
    """``items`` one by one (for a consumer that takes an async iterable), a turn of the loop every ``size``
    unless ``hurry()``."""
    n = 0
    for item in items:
        yield item
        n += 1
        if n == size:
            n = 0
            if not hurry():
                await asyncio.sleep(0)
