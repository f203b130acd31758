"""Upstream responses seen through a translator, so the server relays them like native ones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from gomodel_proxy.core.interfaces import StreamTranslator, UpstreamResponse


class TranslatedStream:
    """A streamed upstream answer whose bytes pass through ``translator`` on their way out.

    ``chunks()`` yields the translator's output as the upstream's bytes arrive (nothing is held but
    what the translator must hold); the translator stays readable for usage and errors afterwards.
    """

    __slots__ = ("_headers", "_upstream", "translator")

    def __init__(self, upstream: UpstreamResponse, translator: StreamTranslator, content_type: str) -> None:
        self._upstream = upstream
        self.translator = translator
        headers = {k: v for k, v in upstream.headers.items() if k.lower() != "content-type"}
        headers["Content-Type"] = content_type
        self._headers = headers

    @property
    def status(self) -> int:
        return self._upstream.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    async def chunks(self) -> AsyncIterator[bytes]:
        async for data in self._upstream.chunks():
            out = self.translator.feed(data)
            if out:
                yield out
        rest = self.translator.finish()
        if rest:
            yield rest

    async def read(self) -> bytes:
        return b"".join([c async for c in self.chunks()])

    def release(self) -> None:
        self._upstream.release()


class ReadyBody:
    """A whole answer already in memory (a translated non-streamed body, an error)."""

    __slots__ = ("_body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.status = status
        self._body = body
        self.headers = dict(headers)

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    async def read(self) -> bytes:
        return self._body

    def release(self) -> None:
        return None
