"""The contracts between layers: what a provider offers and what it hands back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, runtime_checkable

from gomodel_proxy.core.types import CallRecord, ModelInfo


class UpstreamResponse(Protocol):
    """A provider's answer whose body has not been read yet.

    The server either streams ``chunks()`` to the client as they arrive or ``read()``s a small
    body whole; it always calls ``release()`` when done, also on cancellation.
    """

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def read(self) -> bytes: ...

    def release(self) -> None: ...


@runtime_checkable
class Provider(Protocol):
    """One configured upstream (an OpenAI account, a Groq account, a local vLLM, ...)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def injects_stream_usage(self) -> bool:
        """Whether streamed chat may ask the provider for ``stream_options.include_usage``."""
        ...

    async def chat_completions(self, body: dict[str, Any], *, stream: bool) -> UpstreamResponse: ...

    async def embeddings(self, body: dict[str, Any]) -> UpstreamResponse: ...

    async def list_models(self) -> list[ModelInfo]: ...

    async def close(self) -> None: ...


class UsageSink(Protocol):
    """Receives one record per finished request (metrics, logs, later the usage store)."""

    def record(self, call: CallRecord) -> None: ...
