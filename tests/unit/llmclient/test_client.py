"""LLMClient against a scripted HTTP client: keys, retries and breakers, with an injected clock and sleep."""

from __future__ import annotations

import pytest

from gomodel_proxy.config.schema import CircuitBreakerConfig, KeyConfig, RetryConfig
from gomodel_proxy.core.errors import GatewayError, UpstreamConnectionError, UpstreamTimeoutError
from gomodel_proxy.llmclient import CircuitOpenError
from gomodel_proxy.llmclient.breaker import CLOSED, HALF_OPEN, OPEN
from gomodel_proxy.llmclient.keyring import _TPM_KEY

from ._fakes import FakeResponse, auth_of, make_client

BODY = b'{"model":"m","messages":[]}'


async def test_one_key_no_failure_sends_once_with_the_key() -> None:
    client, http, sleeps, _ = make_client([200], ["k1"])
    response = await client.request(b"POST", b"/chat/completions", b"Content-Type: application/json\r\n", BODY)
    assert response.status == 200
    assert [s.auth for s in http.sent] == [auth_of("k1")]
    assert http.sent[0].headers == b"Content-Type: application/json\r\n" and http.sent[0].body is BODY
    assert sleeps.waits == [] and client.retries == {}


async def test_429_moves_the_same_request_to_the_next_key_at_once() -> None:
    first = FakeResponse(429, {"retry-after": "20"})
    client, http, sleeps, clock = make_client([first, 200], ["k1", "k2"])
    response = await client.request(b"POST", b"/x", b"", BODY)
    assert response.status == 200 and first.released
    assert http.keys_used == [auth_of("k1"), auth_of("k2")]
    assert [s.body for s in http.sent] == [BODY, BODY]  # the same bytes sent again
    assert sleeps.waits == []  # no wait: another key was ready
    assert client.retries == {"key_429": 1}
    # k1 rests for its 20 s: every request goes to k2 meanwhile, then k1 is back.
    for _ in range(3):
        await client.request(b"POST", b"/x", b"", BODY)
    assert http.keys_used[2:] == [auth_of("k2")] * 3
    clock.advance(20.0)
    await client.request(b"POST", b"/x", b"", BODY)
    await client.request(b"POST", b"/x", b"", BODY)
    assert set(http.keys_used[5:]) == {auth_of("k1"), auth_of("k2")}


async def test_401_revokes_the_key_and_the_request_goes_on() -> None:
    client, http, _, _ = make_client([401, 200], ["k1", "k2", "k3"])
    response = await client.request(b"POST", b"/x", b"", BODY)
    assert response.status == 200
    assert http.keys_used == [auth_of("k1"), auth_of("k2")]
    k1 = client.keyring.keys[0]
    assert k1.revoked and k1.failures == {"revoked": 1}
    for _ in range(4):
        await client.request(b"POST", b"/x", b"", BODY)
    assert auth_of("k1") not in http.keys_used[2:]


async def test_all_keys_answering_429_returns_the_last_429_then_refuses_locally() -> None:
    script = [FakeResponse(429, {"retry-after": "30"}), FakeResponse(429, {"retry-after": "12"})]
    client, http, sleeps, _ = make_client(script, ["k1", "k2"])
    response = await client.request(b"POST", b"/x", b"", BODY)
    assert response.status == 429 and response.headers["retry-after"] == "12"  # too long to wait: passed on
    assert len(http.sent) == 2 and sleeps.waits == []
    with pytest.raises(GatewayError) as caught:
        await client.request(b"POST", b"/x", b"", BODY)
    assert caught.value.status == 429 and caught.value.headers == {"retry-after": "12"}
    assert len(http.sent) == 2  # refused without a send


async def test_all_keys_resting_briefly_waits_for_the_soonest() -> None:
    script = [FakeResponse(429, {"retry-after": "1"}), FakeResponse(429, {"retry-after": "1.5"}), 200]
    client, http, sleeps, _ = make_client(script, ["k1", "k2"])
    response = await client.request(b"POST", b"/x", b"", BODY)
    assert response.status == 200
    assert sleeps.waits == [1.0] and http.keys_used[-1] == auth_of("k1")


@pytest.mark.parametrize("status", [500, 502, 503, 504, 529])
async def test_server_errors_are_retried_with_backoff(status: int) -> None:
    failed = FakeResponse(status)
    client, http, sleeps, _ = make_client([failed, 200], ["k1"])
    response = await client.request(b"POST", b"/x", b"", BODY)
    assert response.status == 200 and failed.released
    assert len(http.sent) == 2 and [s.body for s in http.sent] == [BODY, BODY]
    assert sleeps.waits == [pytest.approx(0.05)]  # 0.5 (rand) * 100 ms
    assert client.retries == {f"status_{status}": 1}


async def test_the_last_attempt_answer_is_returned() -> None:
    client, http, sleeps, _ = make_client([500], ["k1"], retry=RetryConfig(max_attempts=3, backoff_base_ms=100))
    response = await client.request(b"POST", b"/x", b"", BODY)
    assert response.status == 500 and len(http.sent) == 3
    assert sleeps.waits == [pytest.approx(0.05), pytest.approx(0.1)]


async def test_a_status_not_listed_is_not_retried() -> None:
    client, http, _, _ = make_client([400, 200], ["k1"])
    assert (await client.request(b"POST", b"/x", b"", BODY)).status == 400
    client, http, _, _ = make_client([500, 200], ["k1"], retry=RetryConfig(on_status=[503]))
    assert (await client.request(b"POST", b"/x", b"", BODY)).status == 500 and len(http.sent) == 1


async def test_retry_after_on_a_5xx_is_honoured() -> None:
    client, _, sleeps, _ = make_client([FakeResponse(503, {"retry-after-ms": "1200"}), 200], ["k1"])
    assert (await client.request(b"POST", b"/x", b"", BODY)).status == 200
    assert sleeps.waits == [1.2]


async def test_connection_errors_are_retried_then_raised() -> None:
    refused = UpstreamConnectionError("provider 'up' could not be reached: ConnectionRefusedError")
    client, http, sleeps, _ = make_client([refused], ["k1"], retry=RetryConfig(max_attempts=3, backoff_base_ms=100))
    with pytest.raises(UpstreamConnectionError):
        await client.request(b"POST", b"/x", b"", BODY)
    assert len(http.sent) == 3 and len(sleeps.waits) == 2
    assert client.retries == {"connection": 2}
    assert client.keyring.keys[0].failures == {"connection": 3}


async def test_timeouts_are_not_retried_unless_configured() -> None:
    hang = UpstreamTimeoutError("provider 'up' did not answer in time")
    client, http, _, _ = make_client([hang, 200], ["k1"])
    with pytest.raises(UpstreamTimeoutError):
        await client.request(b"POST", b"/x", b"", BODY)
    assert len(http.sent) == 1
    client, http, _, _ = make_client([hang, 200], ["k1"], retry=RetryConfig(on_timeout=True))
    assert (await client.request(b"POST", b"/x", b"", BODY)).status == 200 and len(http.sent) == 2


async def test_max_attempts_one_never_retries() -> None:
    client, http, _, _ = make_client([503, 200], ["k1"], retry=RetryConfig(max_attempts=1))
    assert (await client.request(b"POST", b"/x", b"", BODY)).status == 503 and len(http.sent) == 1


async def test_a_streamed_body_is_sent_once() -> None:
    async def upload() -> object:
        yield b"part"

    client, http, _, _ = make_client([FakeResponse(429), 200], ["k1", "k2"])
    response = await client.request(b"POST", b"/files", b"", upload())
    assert response.status == 429 and len(http.sent) == 1
    assert client.keyring.keys[0].rest_until > 0  # still learnt from


BREAKER = CircuitBreakerConfig(failure_threshold=3, window_s=10.0, cooldown_s=5.0)


async def test_breaker_opens_then_fails_fast_without_network() -> None:
    client, http, _, clock = make_client([500], ["k1"], retry=RetryConfig(max_attempts=1), breaker=BREAKER)
    for _ in range(3):
        assert (await client.request(b"POST", b"/x", b"", BODY)).status == 500
    assert client.breaker.state == OPEN
    sent = len(http.sent)
    clock.advance(1.5)
    with pytest.raises(CircuitOpenError) as caught:
        await client.request(b"POST", b"/x", b"", BODY)
    assert len(http.sent) == sent  # no network: refused at once
    error = caught.value
    assert error.status == 503 and error.code == "circuit_open" and "'up'" in error.message
    assert error.headers == {"retry-after": "4"}  # 3.5 s of cooldown left, rounded up
    assert client.fast_failures == 1


async def test_half_open_probe_success_closes_the_breaker() -> None:
    client, _http, _, clock = make_client([500, 500, 500, 200], ["k1"], retry=RetryConfig(max_attempts=1),
                                         breaker=BREAKER)
    for _ in range(3):
        await client.request(b"POST", b"/x", b"", BODY)
    assert client.breaker.state == OPEN
    clock.advance(5.0)
    assert (await client.request(b"POST", b"/x", b"", BODY)).status == 200
    assert client.breaker.state == CLOSED
    assert client.breaker.transitions == {"open": 1, "half_open": 1, "closed": 1}


async def test_half_open_probe_failure_reopens_and_only_one_probe_passes() -> None:
    client, _http, _, clock = make_client([500], ["k1"], retry=RetryConfig(max_attempts=1), breaker=BREAKER)
    for _ in range(3):
        await client.request(b"POST", b"/x", b"", BODY)
    clock.advance(5.0)
    assert client.breaker.enter(clock()) and client.breaker.state == HALF_OPEN  # a probe in flight elsewhere
    with pytest.raises(CircuitOpenError):
        await client.request(b"POST", b"/x", b"", BODY)
    client.breaker.abandoned()
    assert (await client.request(b"POST", b"/x", b"", BODY)).status == 500  # the probe, failing
    assert client.breaker.state == OPEN


async def test_4xx_answers_do_not_count_as_breaker_failures() -> None:
    client, _, _, _ = make_client([400], ["k1"], breaker=BREAKER)
    for _ in range(10):
        await client.request(b"POST", b"/x", b"", BODY)
    assert client.breaker.state == CLOSED and client.breaker.streak == 0


async def test_connection_errors_open_the_breaker() -> None:
    refused = UpstreamConnectionError("refused")
    client, _, _, _ = make_client([refused], ["k1"], retry=RetryConfig(max_attempts=1), breaker=BREAKER)
    for _ in range(3):
        with pytest.raises(UpstreamConnectionError):
            await client.request(b"POST", b"/x", b"", BODY)
    with pytest.raises(CircuitOpenError):
        await client.request(b"POST", b"/x", b"", BODY)


async def test_a_failing_key_opens_its_own_breaker_and_traffic_moves() -> None:
    def by_key(sent: object) -> int:
        return 502 if getattr(sent, "auth", b"") == auth_of("k1") else 200

    client, _http, _, _ = make_client([by_key], ["k1", "k2"], retry=RetryConfig(max_attempts=1),
                                     breaker=CircuitBreakerConfig(failure_threshold=2, cooldown_s=60))
    statuses = [(await client.request(b"POST", b"/x", b"", BODY)).status for _ in range(8)]
    assert statuses[:3] == [502, 200, 502]
    assert statuses[3:] == [200] * 5  # k1's breaker open: only k2 from here
    assert client.keyring.keys[0].breaker.state == OPEN
    assert client.breaker.state == CLOSED  # successes on k2 keep the provider's closed


async def test_tpm_key_is_noted_for_usage() -> None:
    client, _, _, _ = make_client([200], [KeyConfig(key="k1", tpm=100), "k2"])
    await client.request(b"POST", b"/x", b"", BODY)
    assert _TPM_KEY.get() is client.keyring.keys[0]
