"""The base LLM HTTP client (architecture: "llmclient: retries, circuit breaker"): what every provider sends with.

``LLMClient.request(method, path, headers, body)`` has ``HttpClient.request``'s signature and returns the
first acceptable answer: a success, an error that is not retried, or the last attempt's answer. Around the
HTTP client it adds the provider's keyring (which key, and what to do on 401/403/429), the retry policy and
the circuit breakers (the provider's and each key's). It returns once the status line is in, before anything
is relayed: what it retries, the client never sees.

The common case (one key, no failure, breakers closed) costs a few attribute checks beyond the HTTP
request itself: no clock read, no allocation, no task, no timer.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gomodel_proxy.config.schema import CircuitBreakerConfig, RetryConfig
from gomodel_proxy.core.context import CURRENT_CALL, note_attempt
from gomodel_proxy.core.errors import GatewayError, UpstreamConnectionError, UpstreamTimeoutError
from gomodel_proxy.core.types import Attempt
from gomodel_proxy.httpclient import HttpClient, RequestBody, Response, encode_headers
from gomodel_proxy.llmclient.breaker import STATE_NAMES, CircuitBreaker
from gomodel_proxy.llmclient.keyring import Key, Keyring
from gomodel_proxy.llmclient.retry import RetryPolicy, retry_after_s

Sleep = Callable[[float], Awaitable[Any]]


class CircuitOpenError(GatewayError):
    """A provider whose breaker is open: refused at once, with the cooldown left as ``retry-after``."""

    status = 503
    error_type = "server_error"
    code = "circuit_open"


class LLMClient:
    """One provider's sending side: ``http`` (its pool), ``keyring``, ``retry`` policy and breakers."""

    def __init__(
        self,
        http: HttpClient,
        keyring: Keyring,
        *,
        retry: RetryConfig | None = None,
        breaker: CircuitBreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        logger: Any = None,
    ) -> None:
        self.http = http
        self.name = http.name
        self.keyring = keyring
        self.retry = RetryPolicy(retry or RetryConfig(), rand=rand)
        self.breaker = CircuitBreaker(
            breaker or CircuitBreakerConfig(), provider=self.name, on_transition=self._transition
        )
        for key in keyring.keys:
            key.breaker.on_transition = self._transition
        self.clock = clock
        self.sleep = sleep
        self.logger = logger
        #: Retries by reason (``status_503``, ``connection``, ``timeout``, ``key_429``, ``key_revoked``).
        self.retries: dict[str, int] = {}
        #: Requests refused at once because the provider's breaker was open.
        self.fast_failures = 0

    def _attempt(self, key: Key, started: float, *, status: int = 0, error: str = "") -> None:
        """The send just made, on the request being answered (its audit entry and trace read it)."""
        note_attempt(Attempt(self.name, key.fingerprint, started, time.perf_counter(), status, error))

    @property
    def pool(self) -> Any:
        return self.http.pool

    async def request(
        self,
        method: bytes | str,
        path: bytes | str,
        headers: Sequence[tuple[bytes, bytes]] | bytes = b"",
        body: RequestBody = None,
    ) -> Response:
        """Send with a key of the keyring; retry as configured; the first acceptable answer's head.

        A streamed ``body`` (an upload passed through) is consumed by its first send: such a request goes
        out once (keys and breakers still learn from its answer).
        """
        if not isinstance(headers, bytes):
            headers = encode_headers(headers)
        call = CURRENT_CALL.get()
        if call is not None and call.trace is not None:  # tracing on: the provider continues the trace
            headers = call.trace.outgoing(headers)
        if body is not None and not isinstance(body, bytes):
            return await self._request_once(method, path, headers, body)
        keyring = self.keyring
        breaker = self.breaker
        http = self.http
        attempt = 0  # sends that count against max_attempts
        switches = 0  # moves to another key after a 401/403/429 (at most one per key)
        while True:
            if breaker.state and not breaker.enter(self.clock()):
                self.fast_failures += 1
                raise self._circuit_open()
            try:
                key = keyring.acquire()
            except GatewayError:
                breaker.abandoned()
                raise
            started = time.perf_counter()
            try:
                response = await http.request(method, path, headers, body, key.header)
            except (UpstreamConnectionError, UpstreamTimeoutError) as exc:
                self._attempt(key, started, error="timeout" if isinstance(exc, UpstreamTimeoutError) else "connection")
                attempt += 1
                if not await self._after_exception(exc, key, attempt):
                    raise
                continue
            except BaseException:
                breaker.abandoned()
                key.breaker.abandoned()
                raise
            status = response.status
            self._attempt(key, started, status=status)
            if status < 400:
                if breaker.streak or breaker.state:
                    breaker.success()
                kb = key.breaker
                if kb.streak or kb.state:
                    kb.success()
                if key.rests:
                    key.rests = 0
                if key.tpm is not None:
                    keyring.note(key)
                return response
            # -- an error answer: the slow path from here on ------------------------------------------
            if status >= 500:
                now = self.clock()
                breaker.failure(now)
                key.breaker.failure(now)
                key.count_failure("server_error")
            else:
                breaker.success()
                key.breaker.success()
            if key.tpm is not None:
                keyring.note(key)
            if key.keyless:
                pass
            elif status in (401, 403):
                keyring.revoke(key, status)
                if switches < len(keyring) and keyring.usable(self.clock()):
                    switches += 1
                    self._count("key_revoked")
                    response.release()
                    continue
                return response
            elif status == 429:
                now = self.clock()
                keyring.rest(key, retry_after_s(response.headers), now)
                if switches < len(keyring) and keyring.usable(now):
                    switches += 1
                    self._count("key_429")
                    response.release()
                    continue
            if status not in self.retry.on_status:
                return response
            attempt += 1
            if attempt >= self.retry.max_attempts:
                return response
            if status == 429 and len(keyring) > 1:
                # Every key rests (each until its own retry-after): wait for the soonest, if soon enough.
                retry_after: float | None = keyring.wait(self.clock())
            else:
                retry_after = retry_after_s(response.headers)
            delay = self.retry.delay(attempt, retry_after)
            if delay is None:
                return response
            self._count(f"status_{status}")
            response.release()
            await self.sleep(delay)

    async def _request_once(self, method: bytes | str, path: bytes | str, headers: bytes, body: RequestBody
                            ) -> Response:
        breaker = self.breaker
        if breaker.state and not breaker.enter(self.clock()):
            self.fast_failures += 1
            raise self._circuit_open()
        try:
            key = self.keyring.acquire()
        except GatewayError:
            breaker.abandoned()
            raise
        started = time.perf_counter()
        try:
            response = await self.http.request(method, path, headers, body, key.header)
        except (UpstreamConnectionError, UpstreamTimeoutError) as exc:
            self._attempt(key, started, error="timeout" if isinstance(exc, UpstreamTimeoutError) else "connection")
            await self._after_exception(exc, key, self.retry.max_attempts)
            raise
        except BaseException:
            breaker.abandoned()
            key.breaker.abandoned()
            raise
        status = response.status
        self._attempt(key, started, status=status)
        now = self.clock()
        if status >= 500:
            breaker.failure(now)
            key.breaker.failure(now)
            key.count_failure("server_error")
        else:
            breaker.success()
            key.breaker.success()
            if status in (401, 403):
                self.keyring.revoke(key, status)
            elif status == 429:
                self.keyring.rest(key, retry_after_s(response.headers), now)
        return response

    async def _after_exception(self, exc: GatewayError, key: Key, attempt: int) -> bool:
        """Count a connection error or timeout; wait and return True when the request goes again."""
        now = self.clock()
        self.breaker.failure(now)
        key.breaker.failure(now)
        timeout = isinstance(exc, UpstreamTimeoutError)
        reason = "timeout" if timeout else "connection"
        key.count_failure(reason)
        policy = self.retry
        if not (policy.on_timeout if timeout else policy.on_connection_error) or attempt >= policy.max_attempts:
            return False
        self._count(reason)
        await self.sleep(policy.backoff(attempt))
        return True

    def available(self) -> bool:
        """Whether a request would be sent now: the provider's breaker lets it pass and some key is usable.

        Cheap and without effect on the breaker (the router asks it to skip targets; ``routing.balancer``).
        """
        now = self.clock()
        if self.breaker.state and not self.breaker.ready(now):
            return False
        return self.keyring.usable(now)

    def _count(self, reason: str) -> None:
        self.retries[reason] = self.retries.get(reason, 0) + 1

    def _circuit_open(self) -> CircuitOpenError:
        remaining = self.breaker.remaining(self.clock())
        return CircuitOpenError(
            f"Provider '{self.name}' is failing and its circuit breaker is open: requests to it fail at once "
            f"for {remaining:.0f} s more, then a probe request decides whether it is back.",
            headers={"retry-after": str(max(1, math.ceil(remaining)))},
        )

    def _transition(self, breaker: CircuitBreaker, old: int, new: int) -> None:
        if self.logger is None:
            return
        log = self.logger.warning if STATE_NAMES[new] == "open" else self.logger.info
        log(
            "circuit breaker " + STATE_NAMES[new], provider=self.name, key_fingerprint=breaker.key or None,
            previous=STATE_NAMES[old], cooldown_s=breaker.cooldown_s,
        )

    async def close(self) -> None:
        await self.http.close()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()
