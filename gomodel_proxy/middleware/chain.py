"""Composition of the request chain (architecture: ``Chain(middlewares...)``).

A chain is built once at start-up from the middlewares the ``features`` switch on; a feature that is
off is simply not in the tuple, so it costs nothing. ``run`` threads a request through every step and
ends in the route's own handler (the provider call and the relay of its answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from gomodel_proxy.core.interfaces import Handler, Middleware, RequestContext


class Chain:
    """Middlewares in order: the first sees the request first and the answer last."""

    __slots__ = ("middlewares",)

    def __init__(self, middlewares: Sequence[Middleware]) -> None:
        self.middlewares = tuple(middlewares)

    def __bool__(self) -> bool:
        return bool(self.middlewares)

    async def run(self, ctx: RequestContext, handler: Handler) -> Any:
        step: Handler = handler
        for middleware in reversed(self.middlewares):
            step = partial(middleware.process, call_next=step)
        return await step(ctx)

    def names(self) -> list[str]:
        return [type(m).__name__ for m in self.middlewares]
