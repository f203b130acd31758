"""Micro-benchmark: what the llmclient (keyring, retries, breakers) adds to a send, network excluded.

    .venv/bin/python bench/llmclient_overhead.py

The HTTP client is replaced by one that answers at once with a ready response, so that the figures are the
wrapper's own CPU time per request: direct ``http.request`` vs ``LLMClient.request`` with one key, with three
keys (round robin), and the refusal of a provider whose breaker is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from typing import Any

from gomodel_proxy.config.schema import CircuitBreakerConfig, RetryConfig
from gomodel_proxy.core.errors import GatewayError
from gomodel_proxy.llmclient import BEARER, Keyring, LLMClient


class _Answer:
    status = 200
    headers: dict[str, str] = {}

    def release(self) -> None:
        return None


class _InstantHttp:
    name = "bench"
    pool = None

    def __init__(self) -> None:
        self.answer = _Answer()

    async def request(self, method: Any, path: Any, headers: bytes = b"", body: Any = None, auth: bytes = b"") -> Any:
        return self.answer

    async def close(self) -> None:
        return None


def _client(keys: list[str]) -> tuple[LLMClient, _InstantHttp]:
    http = _InstantHttp()
    keyring = Keyring("bench", keys, BEARER, breaker=CircuitBreakerConfig(), clock=time.monotonic)
    return LLMClient(http, keyring, retry=RetryConfig(), breaker=CircuitBreakerConfig()), http  # type: ignore[arg-type]


async def _per_call_ns(call: Any, n: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(n):
        await call()
    return (time.perf_counter_ns() - started) / n


async def _refused(client: LLMClient) -> None:
    with contextlib.suppress(GatewayError):
        await client.request(b"POST", b"/chat/completions", b"", b"{}")


async def main(n: int = 200_000, rounds: int = 7) -> None:
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    headers = b"Content-Type: application/json\r\n"
    one, http = _client(["sk-one"])
    three, _ = _client(["sk-a", "sk-b", "sk-c"])
    open_, _ = _client(["sk-one"])
    open_.breaker._open(time.monotonic())  # open for the default 30 s cooldown

    cases = {
        "direct http.request": lambda: http.request(b"POST", b"/chat/completions", headers, body, b""),
        "LLMClient, 1 key": lambda: one.request(b"POST", b"/chat/completions", headers, body),
        "LLMClient, 3 keys": lambda: three.request(b"POST", b"/chat/completions", headers, body),
        "open breaker refusal": lambda: _refused(open_),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):  # alternating rounds, medians
        for name, call in cases.items():
            results[name].append(await _per_call_ns(call, n))
    base = statistics.median(results["direct http.request"])
    for name, values in results.items():
        median = statistics.median(values)
        extra = f"  (+{(median - base) / 1000:.2f} us over direct)" if name != "direct http.request" else ""
        print(f"{name:24s} {median / 1000:7.3f} us/call{extra}")


if __name__ == "__main__":
    asyncio.run(main())
