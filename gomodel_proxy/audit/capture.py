"""The bodies of one request as they passed, for its audit entry (only when ``audit.include_bodies``).

``Bodies`` keeps the request's raw bytes (already read once by ``server.inbound``: kept, not copied) and
the answer: a whole answer's bytes, or a streamed answer reassembled from the pieces the client received.
For a stream it is a ``core.interfaces.StreamFilter`` that passes every piece on at once, unchanged,
keeping a reference to it until ``limit`` bytes are kept: the stream is never delayed, and memory per
request is bounded by the limit.
"""

from __future__ import annotations


class Bodies:
    __slots__ = ("limit", "overflow", "parts", "request", "size", "whole")

    def __init__(self, request: bytes | None, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        #: More of the stream passed than was kept.
        self.overflow = False
        self.whole: bytes | None = None

    # -- StreamFilter ------------------------------------------------------------------------------
    async def feed(self, data: bytes) -> bytes:
        if self.size < self.limit:
            self.parts.append(data)
            self.size += len(data)
        else:
            self.overflow = True
        return data

    async def finish(self) -> bytes:
        return b""

    # -- what the entry reads ----------------------------------------------------------------------
    def set_response(self, body: bytes) -> None:
        self.whole = body

    def response(self) -> bytes | None:
        if self.whole is not None:
            return self.whole
        return b"".join(self.parts) if self.parts else None
