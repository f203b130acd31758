"""A provider's keys: which one a request uses, and which ones are resting, limited or revoked.

Keys come from ``api_key`` and ``api_keys`` (plain strings, or ``{key, weight, rpm, tpm}``). A request takes
the next usable key, in turn (``round_robin``) or by weight (``weighted``: smooth weighted round robin, so
that the shares are exact over any run of requests, not just on average). A key is not usable while:

- it is *revoked*: the provider answered 401/403 with it; it stays out until the gateway restarts (a
  provider's only key is never revoked: with nothing to move to, the provider's answer goes to the client);
- it is *resting*: the provider answered 429; it rests until ``retry-after`` (``retry-after-ms``, or an HTTP
  date), else for ``REST_BASE_S`` doubling with each 429 in a row up to ``REST_MAX_S`` (a provider's only
  key does not rest: its 429 goes to the client as the provider wrote it, retry-after included);
- it is *rate limited* by the gateway itself: its ``rpm`` or ``tpm`` budget (local token buckets refilled
  continuously) is spent. RPM counts requests as they leave; TPM counts the tokens of each answer once its
  usage is known (``record_usage``), so a key may overshoot by the tokens of the calls in flight;
- its own circuit breaker is open.

When no key is usable the request is refused at once, in OpenAI's error shape: 401 when every key is
revoked, 503 ``circuit_open`` when the keys left are behind open breakers, else 429; each with a
``retry-after`` of the soonest key. Each key's auth header is encoded once: a request adds those bytes, the
key itself is never formatted again, never logged, never labelled (metrics show ``fingerprint``, the first
8 hex digits of its SHA-256).
"""

from __future__ import annotations

import contextvars
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gomodel_proxy.config.schema import CircuitBreakerConfig, KeyConfig
from gomodel_proxy.core.errors import GatewayError
from gomodel_proxy.httpclient import encode_headers
from gomodel_proxy.llmclient.breaker import CLOSED, CircuitBreaker, TransitionHook

#: Rest after a 429 that names no time: 1 s, doubling with each 429 in a row, at most a minute.
REST_BASE_S = 1.0
REST_MAX_S = 60.0

#: ``gomodel_provider_key_state`` values.
KEY_ACTIVE = 0
KEY_RATE_LIMITED = 1
KEY_RESTING = 2
KEY_REVOKED = 3
KEY_STATE_NAMES = ("active", "rate_limited", "resting", "revoked")


def fingerprint(key: str) -> str:
    """What a key is shown as anywhere: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class AuthScheme:
    """How a provider carries its key: ``header: prefix + key``."""

    header: str
    prefix: str = ""


BEARER = AuthScheme("Authorization", "Bearer ")


class TokenBucket:
    """``per_minute`` tokens a minute, refilled continuously, at most ``per_minute`` saved up."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until at least one token is there (0: now)."""
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self, amount: float, now: float) -> None:
        self.wait(now)
        self.tokens -= amount


class Key:
    """One key and its state. It is also the *lease* a request holds: no object is made per request."""

    __slots__ = (
        "breaker", "current", "failures", "fingerprint", "header", "keyless", "keyring", "plain", "requests",
        "rest_until", "rests", "revoked", "rpm", "tpm", "weight",
    )

    def __init__(
        self, keyring: Keyring, header: bytes, fp: str, weight: float, breaker: CircuitBreaker, *,
        rpm: TokenBucket | None = None, tpm: TokenBucket | None = None, keyless: bool = False,
    ) -> None:
        self.keyring = keyring
        #: The pre-encoded ``Name: value\r\n`` line(s) a request adds.
        self.header = header
        self.fingerprint = fp
        self.weight = weight
        self.breaker = breaker
        self.rpm = rpm
        self.tpm = tpm
        #: No key at all (a local server): nothing to revoke or rest.
        self.keyless = keyless
        #: No limits of the gateway's own: usable without reading the clock while nothing is wrong.
        self.plain = rpm is None and tpm is None
        self.revoked = False
        #: Monotonic time the current rest ends (0.0: not resting).
        self.rest_until = 0.0
        #: 429s in a row (for the rest without ``retry-after``).
        self.rests = 0
        #: Smooth weighted round robin's running weight.
        self.current = 0.0
        self.requests = 0
        #: Failures by reason: ``revoked``, ``rate_limited``, ``server_error``, ``connection``, ``timeout``.
        self.failures: dict[str, int] = {}

    def count_failure(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def state(self, now: float) -> int:
        if self.revoked:
            return KEY_REVOKED
        if self.rest_until > now:
            return KEY_RESTING
        if (self.rpm is not None and self.rpm.wait(now) > 0) or (self.tpm is not None and self.tpm.wait(now) > 0):
            return KEY_RATE_LIMITED
        return KEY_ACTIVE


#: The key that served the current request (only for keys with a TPM budget), so that the usage recorded at
#: the end of the request is charged to it. A request runs in one task, whose context this lives in.
_TPM_KEY: contextvars.ContextVar[Key | None] = contextvars.ContextVar("gomodel_tpm_key", default=None)


def charge_usage(tokens: int) -> None:
    """Charge ``tokens`` to the key that served this request, if it has a TPM budget (the recorder calls it)."""
    key = _TPM_KEY.get()
    if key is not None and tokens > 0:
        key.keyring.record_usage(key, tokens)


class Keyring:
    """The keys of one provider (``name``), each sent as ``scheme``; ``clock`` is monotonic seconds."""

    def __init__(
        self,
        name: str,
        entries: Sequence[str | KeyConfig],
        scheme: AuthScheme = BEARER,
        *,
        strategy: str = "round_robin",
        breaker: CircuitBreakerConfig | None = None,
        clock: Callable[[], float],
        logger: Any = None,
        on_breaker_transition: TransitionHook | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.logger = logger
        self.weighted = strategy == "weighted"
        #: Kept for ``replace_keys`` (keys loaded again from a credential store).
        self.scheme = scheme
        self.breaker_config = breaker
        self.on_breaker_transition = on_breaker_transition
        now = clock()
        keys: list[Key] = []
        for entry in entries:
            spec = entry if isinstance(entry, KeyConfig) else KeyConfig(key=entry)
            if not spec.key:
                continue
            fp = fingerprint(spec.key)
            header = encode_headers([(scheme.header, scheme.prefix + spec.key)])
            key_breaker = CircuitBreaker(
                breaker or CircuitBreakerConfig(enabled=False), provider=name, key=fp,
                on_transition=on_breaker_transition,
            )
            keys.append(Key(
                self, header, fp, spec.weight, key_breaker,
                rpm=TokenBucket(spec.rpm, now) if spec.rpm else None,
                tpm=TokenBucket(spec.tpm, now) if spec.tpm else None,
            ))
        if not keys:
            keys.append(Key(self, b"", "", 1.0, CircuitBreaker(CircuitBreakerConfig(enabled=False)), keyless=True))
        self.keys = keys
        #: Whether any key has a TPM budget (then each request notes its key for ``charge_usage``).
        self.tracks_tokens = any(k.tpm is not None for k in keys)
        self._cursor = 0

    def __len__(self) -> int:
        return len(self.keys)

    # -- choosing ---------------------------------------------------------------------------------------
    def acquire(self) -> Key:
        """The key for the next request, or a ``GatewayError`` (401/429/503) when none is usable now."""
        if not self.weighted:
            # The common case: the key whose turn it is has nothing wrong and no limits (no clock read).
            keys = self.keys
            i = self._cursor
            key = keys[i]
            if key.plain and not key.revoked and not key.rest_until and key.breaker.state == CLOSED:
                i += 1
                self._cursor = i if i < len(keys) else 0
                key.requests += 1
                return key
        return self._acquire(self.clock())

    def _acquire(self, now: float) -> Key:
        keys = self.keys
        n = len(keys)
        chosen: Key | None = None
        if self.weighted and n > 1:
            total = 0.0
            for key in keys:
                if self._usable(key, now):
                    key.current += key.weight
                    total += key.weight
                    if chosen is None or key.current > chosen.current:
                        chosen = key
            if chosen is not None:
                chosen.current -= total
        else:
            start = self._cursor
            for i in range(n):
                key = keys[(start + i) % n]
                if self._usable(key, now):
                    chosen = key
                    self._cursor = (start + i + 1) % n
                    break
        if chosen is None or not chosen.breaker.enter(now):
            raise self.exhausted(now)
        if chosen.rpm is not None:
            chosen.rpm.take(1.0, now)
        chosen.requests += 1
        return chosen

    def _usable(self, key: Key, now: float) -> bool:
        if key.revoked:
            return False
        if key.rest_until:
            if now < key.rest_until:
                return False
            key.rest_until = 0.0
        if not key.plain and (
            (key.rpm is not None and key.rpm.wait(now) > 0) or (key.tpm is not None and key.tpm.wait(now) > 0)
        ):
            return False
        return key.breaker.ready(now)

    def usable(self, now: float) -> bool:
        """Whether some key could take a request now."""
        return any(self._usable(k, now) for k in self.keys)

    def wait(self, now: float) -> float:
        """Seconds until some key is usable (``inf`` when every key is revoked)."""
        return min((self._wait(k, now) for k in self.keys), default=math.inf)

    def _wait(self, key: Key, now: float) -> float:
        if key.revoked:
            return math.inf
        wait = max(0.0, key.rest_until - now) if key.rest_until else 0.0
        if key.rpm is not None:
            wait = max(wait, key.rpm.wait(now))
        if key.tpm is not None:
            wait = max(wait, key.tpm.wait(now))
        if not key.breaker.ready(now):
            wait = max(wait, key.breaker.remaining(now))
        return wait

    def exhausted(self, now: float) -> GatewayError:
        """The error for a request no key can take now."""
        live = [k for k in self.keys if not k.revoked]
        if not live:
            return GatewayError(
                f"Every API key of provider '{self.name}' was rejected by the provider (401/403) and is out of "
                "rotation; fix the provider's keys in the configuration and restart the gateway.",
                status=401, error_type="authentication_error", code="provider_keys_revoked",
            )
        soonest = min(live, key=lambda k: self._wait(k, now))
        wait = self._wait(soonest, now)
        retry_after = {"retry-after": str(max(1, math.ceil(wait)))}
        if not soonest.breaker.ready(now) and wait <= soonest.breaker.remaining(now):
            return GatewayError(
                f"Provider '{self.name}' is failing with every key and its circuit breakers are open; "
                "requests fail fast until the cooldown ends.",
                status=503, error_type="server_error", code="circuit_open", headers=retry_after,
            )
        return GatewayError(
            f"Every API key of provider '{self.name}' is rate limited now; retry after {retry_after['retry-after']} s.",
            status=429, error_type="rate_limit_error", code="provider_keys_rate_limited", headers=retry_after,
        )

    # -- what happened ----------------------------------------------------------------------------------
    def revoke(self, key: Key, status: int) -> None:
        """Take ``key`` out of rotation (the provider answered it 401/403); logged once, by fingerprint."""
        if key.keyless or key.revoked:
            return
        if len(self.keys) == 1:
            # Nothing to move to: the provider's own 401/403 goes to the client as it always did, and a
            # passing auth failure on the provider's side does not take the provider out until a restart.
            key.count_failure("unauthorized")
            return
        key.revoked = True
        key.count_failure("revoked")
        if self.logger is not None:
            left = sum(1 for k in self.keys if not k.revoked)
            self.logger.warning(
                "provider key revoked", provider=self.name, key_fingerprint=key.fingerprint, status=status,
                keys_left=left, fix="replace the key in the configuration and restart the gateway",
            )

    def rest(self, key: Key, seconds: float | None, now: float) -> float:
        """Rest ``key`` after a 429: ``seconds`` (the provider's ``retry-after``) or a backoff; returns it."""
        if key.keyless:
            return 0.0
        if len(self.keys) == 1:
            # As for revocation: with one key the provider's 429 (and its retry-after) reaches the client as
            # the provider wrote it; the retry policy alone decides whether to wait and send it again.
            key.count_failure("rate_limited")
            return 0.0
        if seconds is None:
            seconds = min(REST_MAX_S, REST_BASE_S * 2.0 ** min(key.rests, 16))
        key.rests += 1
        key.rest_until = max(key.rest_until, now + seconds)
        key.count_failure("rate_limited")
        return seconds

    def record_usage(self, key: Key, tokens: int) -> None:
        """Charge ``tokens`` (an answer's usage) to ``key``'s TPM budget."""
        if key.tpm is not None:
            key.tpm.take(float(tokens), self.clock())

    def note(self, key: Key) -> None:
        """Remember ``key`` as the one that answered this request (for ``charge_usage``)."""
        _TPM_KEY.set(key)

    # -- a new key set (credentials reloaded) -----------------------------------------------------------
    def replace_keys(self, entries: Sequence[str | KeyConfig]) -> KeyChange:
        """Use ``entries`` from the next request on; what changed, by fingerprint.

        A key already here keeps its object and so its state (breaker, rest, revocation, counters, its
        RPM/TPM buckets when their limits are unchanged); a new key starts fresh; a key no longer listed
        leaves the rotation, and a request holding it finishes with it (its lease is the ``Key`` object).
        No entries at all: the provider becomes keyless, as when built without keys.
        """
        now = self.clock()
        old = {k.header: k for k in self.keys}
        hook = self.keys[0].breaker.on_transition if self.keys else self.on_breaker_transition
        keys: list[Key] = []
        seen: set[bytes] = set()
        added: list[str] = []
        kept: list[str] = []
        for entry in entries:
            spec = entry if isinstance(entry, KeyConfig) else KeyConfig(key=entry)
            if not spec.key:
                continue
            header = encode_headers([(self.scheme.header, self.scheme.prefix + spec.key)])
            if header in seen:
                continue
            seen.add(header)
            key = old.get(header)
            if key is None:
                fp = fingerprint(spec.key)
                key = Key(
                    self, header, fp, spec.weight,
                    CircuitBreaker(self.breaker_config or CircuitBreakerConfig(enabled=False), provider=self.name,
                                   key=fp, on_transition=hook),
                    rpm=TokenBucket(spec.rpm, now) if spec.rpm else None,
                    tpm=TokenBucket(spec.tpm, now) if spec.tpm else None,
                )
                added.append(fp)
            else:
                key.weight = spec.weight
                if (key.rpm.capacity if key.rpm else 0) != spec.rpm:
                    key.rpm = TokenBucket(spec.rpm, now) if spec.rpm else None
                if (key.tpm.capacity if key.tpm else 0) != spec.tpm:
                    key.tpm = TokenBucket(spec.tpm, now) if spec.tpm else None
                key.plain = key.rpm is None and key.tpm is None
                kept.append(key.fingerprint)
            keys.append(key)
        if not keys:
            keyless = next((k for k in self.keys if k.keyless), None)
            if keyless is None:
                keyless = Key(self, b"", "", 1.0, CircuitBreaker(CircuitBreakerConfig(enabled=False)), keyless=True)
                keyless.breaker.on_transition = hook
            keys.append(keyless)
        removed = [k.fingerprint for k in self.keys if k.header not in seen and not k.keyless]
        self.keys = keys
        self.tracks_tokens = any(k.tpm is not None for k in keys)
        self._cursor = self._cursor % len(keys)
        return KeyChange(added=added, kept=kept, removed=removed)


@dataclass(frozen=True, slots=True)
class KeyChange:
    """What ``Keyring.replace_keys`` changed, by fingerprint (never the keys)."""

    added: list[str]
    kept: list[str]
    removed: list[str]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)
