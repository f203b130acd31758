"""Doubles for the llmclient's unit tests: a settable clock, a recorded sleep, a scripted HTTP client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gomodel_proxy.config.schema import CircuitBreakerConfig, KeyConfig, RetryConfig
from gomodel_proxy.core.errors import GatewayError
from gomodel_proxy.llmclient import AuthScheme, Keyring, LLMClient


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    released: bool = False

    def release(self) -> None:
        self.released = True


@dataclass
class Sent:
    method: bytes | str
    path: bytes | str
    headers: bytes
    body: Any
    auth: bytes


class ScriptedHttp:
    """Answers each request with the next item of ``script`` (a status, a FakeResponse, an exception, or a
    callable of the request); the last item repeats."""

    def __init__(self, script: list[Any] | None = None, name: str = "up") -> None:
        self.name = name
        self.script = list(script or [200])
        self.sent: list[Sent] = []
        self.pool = None

    async def request(self, method: Any, path: Any, headers: bytes = b"", body: Any = None, auth: bytes = b"") -> Any:
        sent = Sent(method, path, headers, body, auth)
        self.sent.append(sent)
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if callable(item) and not isinstance(item, type):
            item = item(sent)
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, int):
            return FakeResponse(item)
        return item

    async def close(self) -> None:
        return None

    @property
    def keys_used(self) -> list[bytes]:
        return [s.auth for s in self.sent]


class Sleeps:
    def __init__(self, clock: Clock | None = None) -> None:
        self.waits: list[float] = []
        self.clock = clock

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)


def auth_of(key: str) -> bytes:
    return b"Authorization: Bearer " + key.encode() + b"\r\n"


def make_client(
    script: list[Any] | None = None,
    keys: list[str | KeyConfig] | None = None,
    *,
    retry: RetryConfig | None = None,
    breaker: CircuitBreakerConfig | None = None,
    strategy: str = "round_robin",
    clock: Clock | None = None,
    rand: Callable[[], float] = lambda: 0.5,
    scheme: AuthScheme | None = None,
) -> tuple[LLMClient, ScriptedHttp, Sleeps, Clock]:
    clock = clock or Clock()
    http = ScriptedHttp(script)
    keyring = Keyring(
        "up", keys if keys is not None else ["k1"], scheme or AuthScheme("Authorization", "Bearer "),
        strategy=strategy, breaker=breaker or CircuitBreakerConfig(), clock=clock,
    )
    sleeps = Sleeps(clock)
    client = LLMClient(
        http,  # type: ignore[arg-type]
        keyring, retry=retry or RetryConfig(backoff_base_ms=100, backoff_max_ms=2000), breaker=breaker,
        clock=clock, sleep=sleeps, rand=rand,
    )
    return client, http, sleeps, clock


def error_of(exc: BaseException) -> GatewayError:
    assert isinstance(exc, GatewayError)
    return exc
