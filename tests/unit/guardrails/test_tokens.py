"""Token counting with the bundled cl100k vocabulary: exact counts, big texts off the loop, the fallback."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from gomodel_proxy.guardrails.tokens import TokenCounter, estimate_tokens, request_text


class Logger:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello world", 2),
        ("Hello, world!", 4),
        ("The quick brown fox jumps over the lazy dog.", 10),
        ("", 0),
        # Special tokens in user text are plain text, never control tokens.
        ("<|endoftext|>", 7),
    ],
)
async def test_exact_cl100k_counts(text: str, expected: int) -> None:
    counter = TokenCounter()
    assert await counter.count(text) == expected


async def test_ready_loads_once_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = TokenCounter()
    assert not counter.exact
    calls: list[Any] = []
    real = asyncio.to_thread

    async def spy(func: Any, *args: Any) -> Any:
        calls.append(func)
        return await real(func, *args)

    monkeypatch.setattr(asyncio, "to_thread", spy)
    assert await counter.ready() is True
    assert counter.exact
    assert await counter.ready() is True
    assert calls == [counter.load]
    assert counter.count_sync("hello world") == 2


async def test_big_text_is_counted_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = TokenCounter()
    await counter.ready()
    big = "The quick brown fox jumps over the lazy dog. " * (1024 * 1024 // 45)  # ~1 MiB
    offloaded: list[int] = []
    real = asyncio.to_thread

    async def spy(func: Any, *args: Any) -> Any:
        offloaded.append(len(args[0]))
        return await real(func, *args)

    monkeypatch.setattr(asyncio, "to_thread", spy)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        n = await counter.count(big)
    finally:
        task.cancel()
    assert n == counter.count_sync(big) > 200_000
    assert offloaded == [len(big)]
    assert ticks > 0  # the loop kept running while the thread counted
    assert await counter.count("small text") == 2
    assert offloaded == [len(big)]


def test_estimate() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("é" * 4) == 2  # 8 UTF-8 bytes
    assert estimate_tokens("a\ud800") == 1  # a lone surrogate from a JSON body does not crash


async def test_fallback_when_the_tokenizer_cannot_load() -> None:
    logger = Logger()
    counter = TokenCounter("no_such_encoding", logger=logger)
    assert await counter.ready() is False
    assert await counter.count("hello world") == 3  # 11 bytes / 4, rounded up
    assert counter.count_sync("x" * 40_000) == 10_000
    assert await counter.count("x" * 40_000) == 10_000
    assert not counter.exact
    assert len(logger.warnings) == 1
    event, fields = logger.warnings[0]
    assert "estimating" in event and fields["encoding"] == "no_such_encoding"
    TokenCounter("no_such_encoding").load()  # without a logger: silent


def test_request_text_joins_slots_and_tools() -> None:
    body = {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    }
    text = request_text("chat", body)
    assert text.startswith("Be brief.\nWeather?\n[")
    assert '"get_weather"' in text
    assert request_text("chat", {"messages": [], "functions": {1, 2}}) in ("{1, 2}", "{2, 1}")
    assert request_text("messages", {"messages": [{"role": "user", "content": "hi"}], "tools": []}) == "hi"


async def test_count_request() -> None:
    counter = TokenCounter()
    body = {"input": "hello world"}
    assert await counter.count_request("responses", body) == 2
    with_tools = {"input": "hello world", "tools": [{"type": "function", "name": "f"}]}
    assert await counter.count_request("responses", with_tools) > 2


def test_load_waits_for_a_concurrent_load() -> None:
    counter = TokenCounter()
    loaded = object()
    with counter._lock:  # another thread is loading
        waiter = threading.Thread(target=counter.load)
        waiter.start()
        time.sleep(0.02)
        counter._encoding = loaded  # type: ignore[assignment]
    waiter.join()
    assert counter.load() is loaded
