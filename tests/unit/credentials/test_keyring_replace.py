"""``Keyring.replace_keys``: a new key set from the next request on; state of the keys that stay is kept."""

from __future__ import annotations

from gomodel_proxy.config.schema import CircuitBreakerConfig, KeyConfig
from gomodel_proxy.llmclient import AuthScheme, Keyring, fingerprint
from tests.unit.llmclient._fakes import Clock


def ring(entries: list[str | KeyConfig], clock: Clock | None = None, **kwargs: object) -> Keyring:
    return Keyring("up", entries, AuthScheme("Authorization", "Bearer "), clock=clock or Clock(),
                   **kwargs)  # type: ignore[arg-type]


def sent(r: Keyring, n: int) -> list[str]:
    return [r.acquire().header.decode().split("Bearer ")[1].strip() for _ in range(n)]


def test_a_rotated_key_is_used_by_the_next_request_and_a_held_lease_keeps_its_key() -> None:
    r = ring(["old"])
    held = r.acquire()  # a request in flight
    change = r.replace_keys(["new"])
    assert change.added == [fingerprint("new")] and change.removed == [fingerprint("old")] and change.changed
    assert sent(r, 2) == ["new", "new"]
    assert held.header == b"Authorization: Bearer old\r\n"  # the request in flight finishes with its key
    r.revoke(held, 401)  # what the client does with a lease after the answer: harmless on a removed key
    r.rest(held, 5.0, 1000.0)
    assert sent(r, 1) == ["new"]


def test_keys_that_stay_keep_their_state_and_new_ones_start_fresh() -> None:
    clock = Clock()
    r = ring(["a", "b", "c"], clock, breaker=CircuitBreakerConfig(failure_threshold=1, cooldown_s=30))
    a, b = r.keys[0], r.keys[1]
    r.rest(a, 30.0, clock())
    r.revoke(b, 401)
    a.requests = 7
    change = r.replace_keys(["a", "b", "d"])
    assert change.kept == [fingerprint("a"), fingerprint("b")] and change.removed == [fingerprint("c")]
    assert r.keys[0] is a and r.keys[1] is b
    assert a.rest_until > clock() and a.requests == 7 and b.revoked
    d = r.keys[2]
    assert not d.revoked and not d.rest_until and d.breaker.enabled and d.breaker.key == fingerprint("d")
    assert sent(r, 2) == ["d", "d"]  # a rests, b is revoked


def test_new_keys_report_breaker_transitions_to_the_clients_hook() -> None:
    seen: list[str] = []
    r = ring(["a"], breaker=CircuitBreakerConfig(failure_threshold=1))
    r.keys[0].breaker.on_transition = lambda br, old, new: seen.append(br.key)  # as LLMClient sets it
    r.replace_keys(["a", "z"])
    z = r.keys[1]
    z.breaker.failure(1000.0)
    assert seen == [fingerprint("z")]


def test_settings_of_a_key_follow_the_new_entry() -> None:
    clock = Clock()
    r = ring([KeyConfig(key="a", weight=1.0), "b"], clock, strategy="weighted")
    a = r.keys[0]
    r.replace_keys([KeyConfig(key="a", weight=3.0, rpm=60, tpm=1000), "b"])
    assert r.keys[0] is a and a.weight == 3.0 and a.rpm is not None and a.tpm is not None and not a.plain
    assert r.tracks_tokens
    bucket = a.rpm
    r.replace_keys([KeyConfig(key="a", weight=3.0, rpm=60, tpm=0), "b", "b"])
    assert a.rpm is bucket and a.tpm is None and len(r) == 2 and not r.tracks_tokens
    counts = {"a": 0, "b": 0}
    for name in sent(r, 8):
        counts[name] += 1
    assert counts == {"a": 6, "b": 2}


def test_the_cursor_stays_in_range_and_an_empty_set_means_keyless() -> None:
    r = ring(["a", "b", "c"])
    sent(r, 2)
    r.replace_keys(["x"])
    assert sent(r, 2) == ["x", "x"]
    change = r.replace_keys([])
    assert change.removed == [fingerprint("x")] and len(r) == 1 and r.keys[0].keyless
    assert r.acquire().header == b""
    r.replace_keys(["y"])
    assert sent(r, 1) == ["y"]
