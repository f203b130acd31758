"""The circuit breaker as a state machine on an injected clock."""

from __future__ import annotations

from gomodel_proxy.config.schema import CircuitBreakerConfig
from gomodel_proxy.llmclient.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


def breaker(**kwargs: float) -> CircuitBreaker:
    values = {"failure_threshold": 3, "window_s": 10.0, "cooldown_s": 5.0, "half_open_requests": 1, **kwargs}
    return CircuitBreaker(CircuitBreakerConfig(**values))  # type: ignore[arg-type]


def test_opens_after_threshold_failures_in_a_row() -> None:
    b = breaker()
    b.failure(0.0)
    b.failure(1.0)
    assert b.state == CLOSED and b.enter(1.0)
    b.failure(2.0)
    assert b.state == OPEN
    assert not b.enter(2.1) and not b.ready(6.9)
    assert b.remaining(3.0) == 4.0
    assert b.transitions["open"] == 1


def test_a_success_between_failures_resets_the_streak() -> None:
    b = breaker()
    for t in range(10):
        b.failure(float(t))
        b.failure(float(t) + 0.1)
        b.success()
    assert b.state == CLOSED and b.transitions["open"] == 0


def test_failures_further_apart_than_the_window_do_not_add_up() -> None:
    b = breaker(window_s=1.0)
    b.failure(0.0)
    b.failure(0.5)
    b.failure(2.0)  # the streak started at 0.0 is older than the window: a new streak begins
    assert b.state == CLOSED and b.streak == 1


def test_half_open_lets_probes_through_and_a_success_closes_it() -> None:
    b = breaker(half_open_requests=2)
    for t in (0.0, 0.1, 0.2):
        b.failure(t)
    assert not b.enter(5.1)  # cooldown until 5.2
    assert b.ready(5.2) and b.enter(5.2)
    assert b.state == HALF_OPEN
    assert b.enter(5.3)  # second probe
    assert not b.enter(5.3) and not b.ready(5.3)  # no third
    b.success()
    assert b.state == CLOSED and b.enter(5.4)
    assert b.transitions == {"closed": 1, "half_open": 1, "open": 1}


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    b = breaker()
    for t in (0.0, 0.1, 0.2):
        b.failure(t)
    assert b.enter(10.0)
    b.failure(10.5)
    assert b.state == OPEN and b.remaining(10.5) == 5.0
    assert not b.enter(15.4) and b.enter(15.5)


def test_an_abandoned_probe_frees_its_place() -> None:
    b = breaker()
    for t in (0.0, 0.1, 0.2):
        b.failure(t)
    assert b.enter(6.0) and not b.enter(6.0)
    b.abandoned()
    assert b.enter(6.0)


def test_disabled_breaker_never_opens() -> None:
    b = CircuitBreaker(CircuitBreakerConfig(enabled=False, failure_threshold=1))
    for t in range(100):
        b.failure(float(t))
    assert b.state == CLOSED and b.enter(100.0)


def test_transition_hook_sees_each_change() -> None:
    seen: list[tuple[int, int]] = []
    b = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1, cooldown_s=1.0),
                       on_transition=lambda _b, old, new: seen.append((old, new)))
    b.failure(0.0)
    b.enter(1.0)
    b.success()
    assert seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
