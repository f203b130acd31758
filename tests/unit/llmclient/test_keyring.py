"""Choosing keys: round robin, weights, rests, revocation, local RPM/TPM budgets; the errors when none is left."""

from __future__ import annotations

import collections
import hashlib

import pytest

from gomodel_proxy.config.schema import CircuitBreakerConfig, KeyConfig
from gomodel_proxy.core.errors import GatewayError
from gomodel_proxy.llmclient import AuthScheme, Keyring, fingerprint
from gomodel_proxy.llmclient.keyring import KEY_ACTIVE, KEY_RATE_LIMITED, KEY_RESTING, KEY_REVOKED, charge_usage

from ._fakes import Clock


def ring(entries: list[str | KeyConfig], clock: Clock | None = None, **kwargs: object) -> Keyring:
    return Keyring("up", entries, AuthScheme("x-api-key"), clock=clock or Clock(), **kwargs)  # type: ignore[arg-type]


def names(r: Keyring, n: int) -> list[str]:
    out = []
    for _ in range(n):
        key = r.acquire()
        out.append(key.header.decode().split(": ")[1].strip())
    return out


def test_each_key_is_encoded_once_in_the_provider_scheme_and_shown_by_fingerprint() -> None:
    r = Keyring("up", ["sk-abc"], AuthScheme("Authorization", "Bearer "), clock=Clock())
    key = r.acquire()
    assert key.header == b"Authorization: Bearer sk-abc\r\n"
    assert key.fingerprint == hashlib.sha256(b"sk-abc").hexdigest()[:8] == fingerprint("sk-abc")
    assert "sk-abc" not in repr(key.fingerprint)


def test_round_robin_in_turn() -> None:
    assert names(ring(["a", "b", "c"]), 7) == ["a", "b", "c", "a", "b", "c", "a"]


def test_weighted_shares_are_exact_and_interleaved() -> None:
    r = ring([KeyConfig(key="a", weight=3), KeyConfig(key="b", weight=1)], strategy="weighted")
    picks = names(r, 400)
    assert collections.Counter(picks) == {"a": 300, "b": 100}
    assert picks[:4].count("b") == 1  # smooth: b is spread out, not served in a block


def test_plain_strings_and_mappings_mix() -> None:
    r = ring(["a", KeyConfig(key="b", weight=2.0)], strategy="weighted")
    assert collections.Counter(names(r, 30)) == {"a": 10, "b": 20}


def test_a_resting_key_is_skipped_until_its_time() -> None:
    clock = Clock()
    r = ring(["a", "b"], clock)
    a = r.acquire()
    r.rest(a, 30.0, clock())
    assert a.state(clock()) == KEY_RESTING
    assert names(r, 4) == ["b", "b", "b", "b"]
    clock.advance(29.9)
    assert names(r, 1) == ["b"]
    clock.advance(0.2)
    assert sorted(names(r, 2)) == ["a", "b"]
    assert a.state(clock()) == KEY_ACTIVE


def test_rest_without_retry_after_backs_off_exponentially() -> None:
    clock = Clock()
    r = ring(["a", "b"], clock)
    a = r.keys[0]
    assert [r.rest(a, None, clock()) for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]
    for _ in range(10):
        r.rest(a, None, clock())
    assert r.rest(a, None, clock()) == 60.0


def test_every_key_resting_is_a_429_with_the_soonest_retry_after() -> None:
    clock = Clock()
    r = ring(["sk-first-key", "sk-second-key"], clock)
    r.rest(r.keys[0], 30.0, clock())
    r.rest(r.keys[1], 4.2, clock())
    with pytest.raises(GatewayError) as caught:
        r.acquire()
    assert caught.value.status == 429 and caught.value.code == "provider_keys_rate_limited"
    assert caught.value.error_type == "rate_limit_error"
    assert caught.value.headers == {"retry-after": "5"}
    assert "'up'" in caught.value.message and "sk-" not in caught.value.message


def test_revoked_keys_are_out_and_all_revoked_is_a_401() -> None:
    r = ring(["a", "b"])
    r.revoke(r.keys[0], 401)
    assert names(r, 3) == ["b", "b", "b"]
    assert r.keys[0].state(0) == KEY_REVOKED and r.keys[0].failures == {"revoked": 1}
    r.revoke(r.keys[1], 403)
    with pytest.raises(GatewayError) as caught:
        r.acquire()
    assert caught.value.status == 401 and caught.value.code == "provider_keys_revoked"


def test_a_single_key_is_never_revoked_nor_rested() -> None:
    clock = Clock()
    r = ring(["a"], clock)
    key = r.acquire()
    r.revoke(key, 401)
    r.rest(key, 30.0, clock())
    assert not key.revoked and key.rest_until == 0.0
    assert r.acquire() is key
    assert key.failures == {"unauthorized": 1, "rate_limited": 1}


def test_revocation_is_logged_once_by_fingerprint() -> None:
    lines: list[tuple[str, dict[str, object]]] = []

    class Log:
        def warning(self, event: str, **fields: object) -> None:
            lines.append((event, fields))

    r = ring(["sk-secret-a", "sk-secret-b"], logger=Log())
    r.revoke(r.keys[0], 401)
    r.revoke(r.keys[0], 401)
    assert len(lines) == 1
    _event, fields = lines[0]
    assert fields["key_fingerprint"] == fingerprint("sk-secret-a") and fields["keys_left"] == 1
    assert "sk-secret" not in repr(lines)


def test_rpm_limit_moves_traffic_to_the_other_key() -> None:
    clock = Clock()
    r = ring([KeyConfig(key="a", rpm=2), "b"], clock)
    assert names(r, 6) == ["a", "b", "a", "b", "b", "b"]
    assert r.keys[0].state(clock()) == KEY_RATE_LIMITED
    clock.advance(30.0)  # one request's worth refilled (2 per minute)
    assert names(r, 3) == ["a", "b", "b"]


def test_rpm_limit_on_every_key_is_a_429_with_the_refill_time() -> None:
    clock = Clock()
    r = ring([KeyConfig(key="a", rpm=60)], clock)
    for _ in range(60):
        r.acquire()
    with pytest.raises(GatewayError) as caught:
        r.acquire()
    assert caught.value.status == 429 and caught.value.headers == {"retry-after": "1"}
    clock.advance(1.0)
    r.acquire()


def test_tpm_budget_is_spent_by_recorded_usage() -> None:
    clock = Clock()
    r = ring([KeyConfig(key="a", tpm=600), "b"], clock)
    a = r.acquire()
    assert r.tracks_tokens
    r.record_usage(a, 1000)  # 400 over budget: 40 s at 10 tokens/s before one token is back
    assert names(r, 3) == ["b", "b", "b"]
    clock.advance(40.2)
    assert names(r, 2) == ["a", "b"]


def test_charge_usage_charges_the_key_noted_in_this_context() -> None:
    clock = Clock()
    r = ring([KeyConfig(key="a", tpm=60)], clock)
    key = r.acquire()
    r.note(key)
    charge_usage(120)
    assert key.tpm is not None and key.tpm.tokens == pytest.approx(-60.0)
    with pytest.raises(GatewayError):
        r.acquire()


def test_keys_behind_open_breakers_are_skipped_and_all_open_is_a_503() -> None:
    clock = Clock()
    r = ring(["a", "b"], clock, breaker=CircuitBreakerConfig(failure_threshold=1, cooldown_s=10.0))
    r.keys[0].breaker.failure(clock())
    assert names(r, 2) == ["b", "b"]
    r.keys[1].breaker.failure(clock())
    with pytest.raises(GatewayError) as caught:
        r.acquire()
    assert caught.value.status == 503 and caught.value.code == "circuit_open"
    assert caught.value.headers == {"retry-after": "10"}
    clock.advance(10.0)
    assert names(r, 1) == ["a"]  # a's probe
    assert r.keys[0].breaker.probes == 1


def test_keyless_provider_sends_no_key() -> None:
    r = ring([])
    key = r.acquire()
    assert key.header == b"" and key.keyless
    r.revoke(key, 401)
    r.rest(key, 5.0, 0.0)
    assert r.acquire() is key
