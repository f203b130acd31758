"""``GET /admin/providers``'s view of one key: what the keyring knows of it (active, resting after a 429, rate
limited by its own rpm, revoked, behind an open breaker), and until when; never the key."""

from __future__ import annotations

import time

from gomodel_proxy.admin.state_routes import _key_json
from gomodel_proxy.config.schema import CircuitBreakerConfig, KeyConfig
from gomodel_proxy.llmclient import Keyring
from gomodel_proxy.llmclient.keyring import fingerprint

KEYS = ["sk-state-key-one-000000000001", "sk-state-key-two-000000000002", "sk-state-key-three-0000000003"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _seconds_from_now(stamp: str) -> float:
    whole = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return whole + int(stamp[20:23]) / 1000 - time.time()


def test_each_state_and_its_end() -> None:
    clock = Clock()
    ring = Keyring("up", [KEYS[0], KEYS[1], KeyConfig(key=KEYS[2], rpm=1)], clock=clock,
                   breaker=CircuitBreakerConfig(failure_threshold=1, cooldown_s=30))
    one, two, three = ring.keys
    assert [_key_json(k, clock.now)["state"] for k in ring.keys] == ["active"] * 3
    assert _key_json(one, clock.now)["cooldown_until"] is None

    ring.rest(one, 20.0, clock.now)  # a 429 with retry-after: 20
    got = _key_json(one, clock.now)
    assert got["state"] == "resting" and 18 <= _seconds_from_now(got["cooldown_until"]) <= 21
    assert got["failures"] == {"rate_limited": 1}

    ring.revoke(two, 401)
    got = _key_json(two, clock.now)
    assert (got["state"], got["cooldown_until"]) == ("revoked", None)

    three.rpm.take(1.0, clock.now)  # type: ignore[union-attr]  # its one request a minute is spent
    got = _key_json(three, clock.now)
    assert got["state"] == "rate_limited" and 55 <= _seconds_from_now(got["cooldown_until"]) <= 61
    assert got["rpm"] == 1 and got["tpm"] is None

    clock.now += 61  # rest, bucket: over
    three.breaker.failure(clock.now)  # its own breaker opens (threshold 1)
    got = _key_json(three, clock.now)
    assert got["state"] == "circuit_open" and got["breaker"]["state"] == "open"
    assert 28 <= _seconds_from_now(got["cooldown_until"]) <= 31
    assert _key_json(one, clock.now)["state"] == "active"

    for key in ring.keys:
        shown = str(_key_json(key, clock.now))
        assert _key_json(key, clock.now)["fingerprint"] == fingerprint(KEYS[ring.keys.index(key)])
        assert not any(k in shown or k[-10:] in shown for k in KEYS)
