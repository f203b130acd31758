"""Sign-in limits (``admin.signin_limit``): failures per address in a sliding window, successes not counted,
memory bounded whatever the addresses, IPv6 counted by /64."""

from __future__ import annotations

from gomodel_proxy.admin.signin_limit import MAX_FAILURES, WINDOW_S, SignInLimiter, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_eleventh_failure_waits() -> None:
    clock = Clock()
    limiter = SignInLimiter(clock=clock)
    assert (MAX_FAILURES, WINDOW_S) == (10, 300.0)
    for _ in range(10):
        assert limiter.retry_after("1.2.3.4") == 0
        limiter.failed("1.2.3.4")
        clock.now += 1
    assert limiter.retry_after("1.2.3.4") == 300 - 10  # until the oldest failure leaves the window
    assert limiter.retry_after("5.6.7.8") == 0  # others are not affected
    clock.now += 290 - 0.5
    assert limiter.retry_after("1.2.3.4") == 1
    clock.now += 0.5
    assert limiter.retry_after("1.2.3.4") == 0  # the oldest failure is out of the window: one more try
    limiter.failed("1.2.3.4")
    assert limiter.retry_after("1.2.3.4") > 0  # ...and the next failure inside it waits again


def test_failures_spread_out_never_wait() -> None:
    clock = Clock()
    limiter = SignInLimiter(clock=clock)
    for _ in range(100):
        limiter.failed("1.2.3.4")
        clock.now += 31  # 10 failures span 279 s... plus one: 310 s
        assert limiter.retry_after("1.2.3.4") == 0


def test_forgiven_attempts_do_not_count() -> None:
    limiter = SignInLimiter(clock=Clock())
    for _ in range(50):  # SSO sign-ins started and completed
        limiter.failed("1.2.3.4")
        limiter.forgive("1.2.3.4")
    assert limiter.retry_after("1.2.3.4") == 0 and len(limiter) == 0
    limiter.forgive("9.9.9.9")  # nothing to forgive: nothing happens


def test_memory_is_bounded() -> None:
    limiter = SignInLimiter(max_clients=100, clock=Clock())
    for i in range(10_000):
        limiter.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        limiter.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(limiter) == 100
    assert all(len(times) <= MAX_FAILURES for times in limiter._failures.values())
    for _ in range(1000):
        limiter.failed("10.0.0.1")
    assert len(limiter._failures["10.0.0.1"]) == MAX_FAILURES  # a deque of 10, however many failures


def test_client_keys() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:1:2:3:4:5:6") == client_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key(None) == "-" and client_key("") == "-"
    assert client_key("/run/gw.sock") == "/run/gw.sock"
