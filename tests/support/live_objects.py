"""How many objects of a class the garbage collector tracks: a test with the collector off sees whether
finished objects went with their last reference or wait in a reference cycle for a collection."""

from __future__ import annotations

import gc


def live(cls: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is cls)
