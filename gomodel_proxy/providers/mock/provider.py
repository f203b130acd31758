"""Deterministic chat completions and embeddings at a configurable pace, with real usage figures.

The same prompt always gets the same words; usage counts exactly the tokens it emitted (one word is
one token) and the prompt's words. Streams follow OpenAI's framing, including
``stream_options.include_usage``, so the gateway treats the mock like any OpenAI-compatible upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import struct
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gomodel_proxy.config.schema import MockConfig, ProviderConfig
from gomodel_proxy.core.errors import InvalidRequestError
from gomodel_proxy.core.interfaces import API_CHAT
from gomodel_proxy.core.types import ModelInfo

_WORDS = (
    "the gateway streams every token as it arrives and keeps the usage exact while the provider "
    "answers quickly so teams can measure latency throughput and cost with confidence"
).split()
_DEFAULT_MODELS = ("mock-chat", "mock-embed")
_ids = itertools.count(1)


class GeneratedResponse:
    """An in-memory upstream response produced by an async generator."""

    __slots__ = ("_body", "_gen", "headers", "status")

    def __init__(self, *, content_type: str, body: bytes | None = None,
                 gen: AsyncIterator[bytes] | None = None, status: int = 200) -> None:
        self.status = status
        self.headers = {"Content-Type": content_type}
        self._body = body
        self._gen = gen

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._gen is not None:
            async for chunk in self._gen:
                yield chunk
        elif self._body is not None:
            yield self._body

    async def read(self) -> bytes:
        return b"".join([c async for c in self.chunks()])

    def release(self) -> None:
        if self._gen is not None:
            aclose = getattr(self._gen, "aclose", None)
            if aclose is not None:
                # Closing an unfinished generator is synchronous work once it is suspended.
                task = asyncio.ensure_future(aclose())
                task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)


class MockProvider:
    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.kind = "mock"
        self.injects_stream_usage = True
        self.native_apis = frozenset({API_CHAT})
        self._models = list(config.models) or list(_DEFAULT_MODELS)
        self._mock = config.mock or MockConfig()

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m, provider=self.name, owned_by="gomodel-proxy") for m in self._models]

    async def close(self) -> None:
        return None

    async def chat_completions(self, body: dict[str, Any], *, stream: bool) -> GeneratedResponse:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequestError("'messages' must be a non-empty list", param="messages")
        prompt_text = _text_of(messages)
        prompt_tokens = len(prompt_text.split()) + 3 * len(messages)
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        count = self._mock.completion_tokens
        if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
            count = min(count, limit)
        words = _words_for(prompt_text, count)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": count,
                 "total_tokens": prompt_tokens + count}
        base = {"id": f"chatcmpl-mock-{next(_ids)}", "created": int(time.time()), "model": body.get("model")}
        finish = "length" if count < self._mock.completion_tokens else "stop"
        if not stream:
            if self._mock.latency_ms:
                await asyncio.sleep(self._mock.latency_ms / 1000)
            payload = {
                **base, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words)},
                             "finish_reason": finish}],
                "usage": usage,
            }
            return GeneratedResponse(content_type="application/json", body=orjson.dumps(payload))
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return GeneratedResponse(
            content_type="text/event-stream",
            gen=self._stream(base, words, finish, usage if include_usage else None),
        )

    async def _stream(self, base: dict[str, Any], words: list[str], finish: str,
                      usage: dict[str, int] | None) -> AsyncIterator[bytes]:
        per_chunk, delay = self._mock.tokens_per_chunk, self._mock.chunk_delay_ms / 1000
        head = {**base, "object": "chat.completion.chunk"}
        extra = {"usage": None} if usage is not None else {}

        def event(choices: list[dict[str, Any]], **more: Any) -> bytes:
            return b"data: " + orjson.dumps({**head, "choices": choices, **more}) + b"\n\n"

        if self._mock.latency_ms:
            await asyncio.sleep(self._mock.latency_ms / 1000)
        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}], **extra)
        for start in range(0, len(words), per_chunk):
            if delay:
                await asyncio.sleep(delay)
            text = "".join(words[start : start + per_chunk])
            yield event([{"index": 0, "delta": {"content": text}, "finish_reason": None}], **extra)
        yield event([{"index": 0, "delta": {}, "finish_reason": finish}], **extra)
        if usage is not None:
            yield event([], usage=usage)
        yield b"data: [DONE]\n\n"

    async def embeddings(self, body: dict[str, Any]) -> GeneratedResponse:
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
            raise InvalidRequestError("'input' must be a string or a non-empty list of strings", param="input")
        dims = body.get("dimensions")
        size = self._mock.embedding_dimensions
        if isinstance(dims, int) and not isinstance(dims, bool) and 0 < dims <= 8192:
            size = dims
        tokens = sum(len(i.split()) for i in inputs)
        payload = {
            "object": "list",
            "data": [{"object": "embedding", "index": n, "embedding": _vector(text, size)}
                     for n, text in enumerate(inputs)],
            "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return GeneratedResponse(content_type="application/json", body=orjson.dumps(payload))


def _text_of(messages: list[Any]) -> str:
    parts: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return " ".join(parts)


def _words_for(prompt: str, count: int) -> list[str]:
    start = zlib.crc32(prompt.encode()) % len(_WORDS)
    return [("" if i == 0 else " ") + _WORDS[(start + i) % len(_WORDS)] for i in range(count)]


def _vector(text: str, size: int) -> list[float]:
    out: list[float] = []
    seed = text.encode()
    counter = 0
    while len(out) < size:
        digest = hashlib.sha256(seed + struct.pack("<I", counter)).digest()
        out.extend(round(v / 2**31 - 1.0, 6) for v in struct.unpack("<8I", digest))
        counter += 1
    return out[:size]
