"""The contracts between layers: what a provider offers and what it hands back."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from gomodel_proxy.core.types import CallRecord, ModelInfo, Principal, Usage


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


#: The client-facing APIs a provider may speak natively (its answers then pass through byte for byte).
API_CHAT = "openai.chat"
API_RESPONSES = "openai.responses"
API_MESSAGES = "anthropic.messages"


class StreamTranslator(Protocol):
    """A sans-I/O stream machine: provider bytes in (any split), client bytes out, facts kept.

    ``feed`` returns the bytes to send the client now (possibly none); ``finish`` those left at the
    end of the provider's stream. ``usage`` and ``error`` are what the stream said; ``complete`` is
    whether it reached its proper end (a truncated stream is not complete).
    """

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...

    @property
    def usage(self) -> Usage | None: ...

    @property
    def error(self) -> dict[str, Any] | None: ...

    @property
    def complete(self) -> bool: ...


class StreamTap(StreamTranslator, Protocol):
    """What the relay pipes a client's stream through: a translator that also counts content events,
    from which usage is estimated when a stream is cut before the provider's own figures came."""

    @property
    def content_events(self) -> int: ...


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

    @property
    def native_apis(self) -> frozenset[str]:
        """Which of ``API_CHAT``, ``API_RESPONSES``, ``API_MESSAGES`` it speaks without translation."""
        ...

    async def chat_completions(self, body: dict[str, Any], *, stream: bool) -> UpstreamResponse:
        """OpenAI chat completions; a provider with another native API translates both ways."""
        ...

    async def embeddings(self, body: dict[str, Any]) -> UpstreamResponse: ...

    async def list_models(self) -> list[ModelInfo]: ...

    async def close(self) -> None: ...


@runtime_checkable
class ResponsesProvider(Protocol):
    """A provider with OpenAI's Responses API (OpenAI, Azure, xAI): forwarded byte for byte."""

    async def responses(self, body: dict[str, Any], *, stream: bool) -> UpstreamResponse: ...

    async def get_response(self, response_id: str) -> UpstreamResponse: ...

    async def delete_response(self, response_id: str) -> UpstreamResponse: ...


@runtime_checkable
class MessagesProvider(Protocol):
    """A provider with Anthropic's Messages API: forwarded byte for byte, beta headers and all."""

    async def messages(self, body: dict[str, Any], *, stream: bool, headers: Mapping[str, str]) -> UpstreamResponse:
        """``headers``: the client's ``anthropic-version`` / ``anthropic-beta`` to pass on."""
        ...

    async def count_tokens(self, body: dict[str, Any], *, headers: Mapping[str, str]) -> UpstreamResponse: ...


#: A pass-through request's body: none, whole, or streamed as the client sends it.
PassthroughBody = bytes | AsyncIterable[bytes] | None


@runtime_checkable
class PassthroughProvider(Protocol):
    """A provider whose native API the gateway forwards as it is (``/{provider}/*``), its own key injected."""

    @property
    def base_url(self) -> str:
        """The configured base URL: pass-through paths must lie under its path."""
        ...

    async def passthrough(self, method: bytes, path: bytes, headers: bytes, body: PassthroughBody) -> UpstreamResponse:
        """Send ``method`` to the base URL + ``path`` (query included) with the client's ``headers``
        (encoded lines, its credentials already removed) and the provider's own credentials."""
        ...


class StreamFilter(Protocol):
    """A step's view of a streamed answer in the client's format, after the relay's tap: ``feed`` returns
    the bytes to pass on now, ``finish`` those held back at the end; raising ``GatewayError`` ends the
    stream with that error as its last event. Registered in ``CallRecord.stream_filters``."""

    async def feed(self, data: bytes) -> bytes: ...

    async def finish(self) -> bytes: ...


class UsageSink(Protocol):
    """Receives one record per finished request (metrics, logs, later the usage store)."""

    def record(self, call: CallRecord) -> None: ...


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(slots=True)
class RequestContext:
    """One API request as the middleware chain sees it: authenticated, parsed once, model resolved.

    ``body`` is the client's JSON object (``None`` on pass-through routes, whose body is not parsed);
    ``body_bytes`` its size, the basis of the token estimate taken before the provider answers;
    ``max_output_tokens`` what the client capped the answer at (``None``: no cap given).
    """

    call: CallRecord
    body: dict[str, Any] | None
    body_bytes: int
    max_output_tokens: int | None = None
    #: The client's request headers (``Cache-Control``, ...); empty when the caller had none to give.
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)

    @property
    def principal(self) -> Principal:
        return self.call.principal


#: The rest of the chain: called once by a middleware that lets the request through. Its result is the
#: response (already fully sent for a stream: post-processing after it sees the call's final usage).
Handler = Callable[[RequestContext], Awaitable[Any]]


class Middleware(Protocol):
    """One step of the request chain (Auth -> RateLimit -> Budget -> Guardrails -> Cache).

    ``process`` refuses by raising a ``GatewayError``, or calls ``call_next`` once and returns its
    result; code after ``call_next`` runs when the answer (a stream included) has ended or was cut.
    """

    async def process(self, ctx: RequestContext, call_next: Handler) -> Any: ...
