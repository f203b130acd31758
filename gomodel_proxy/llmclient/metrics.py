"""The keys' and breakers' state in ``/metrics``, read from the clients when scraped (nothing per request).

- ``gomodel_provider_key_state{provider,key}``: 0 active, 1 rate limited (its own rpm/tpm), 2 resting (429),
  3 revoked (401/403); ``key`` is the fingerprint (first 8 hex digits of the key's SHA-256), never the key.
- ``gomodel_provider_key_requests_total{provider,key}``, ``gomodel_provider_key_failures_total{provider,key,reason}``.
- ``gomodel_circuit_breaker_state{provider,key}``: 0 closed, 1 half-open, 2 open (``key=""``: the provider's
  own breaker); ``gomodel_circuit_breaker_transitions_total{provider,key,to}``.
- ``gomodel_upstream_retries_total{provider,reason}``; ``gomodel_circuit_open_rejections_total{provider}``.

With several worker processes each worker reports its own keys and breakers (they are per process).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gomodel_proxy.llmclient.breaker import CircuitBreaker
from gomodel_proxy.llmclient.client import LLMClient


class ResilienceCollector(Collector):
    def __init__(self, clients: Iterable[LLMClient]) -> None:
        self.clients = list(clients)

    def collect(self) -> Iterator[Metric]:
        key_state = GaugeMetricFamily(
            "gomodel_provider_key_state",
            "Provider key state by fingerprint: 0 active, 1 rate limited, 2 resting (429), 3 revoked (401/403).",
            labels=["provider", "key"],
        )
        key_requests = CounterMetricFamily(
            "gomodel_provider_key_requests", "Requests sent with each provider key (by fingerprint).",
            labels=["provider", "key"],
        )
        key_failures = CounterMetricFamily(
            "gomodel_provider_key_failures", "Failures per provider key (by fingerprint) and reason.",
            labels=["provider", "key", "reason"],
        )
        breaker_state = GaugeMetricFamily(
            "gomodel_circuit_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open "
            "(key \"\": the provider's own breaker).", labels=["provider", "key"],
        )
        transitions = CounterMetricFamily(
            "gomodel_circuit_breaker_transitions", "Circuit breaker transitions by target state.",
            labels=["provider", "key", "to"],
        )
        retries = CounterMetricFamily(
            "gomodel_upstream_retries", "Requests sent again to a provider, by reason.", labels=["provider", "reason"],
        )
        rejections = CounterMetricFamily(
            "gomodel_circuit_open_rejections", "Requests refused at once because the provider's breaker was open.",
            labels=["provider"],
        )
        for client in self.clients:
            name = client.name
            now = client.clock()
            breakers: list[CircuitBreaker] = [client.breaker]
            for key in client.keyring.keys:
                if key.keyless:
                    continue
                fp = key.fingerprint
                key_state.add_metric([name, fp], key.state(now))
                key_requests.add_metric([name, fp], key.requests)
                for reason, count in sorted(key.failures.items()):
                    key_failures.add_metric([name, fp, reason], count)
                if key.breaker.enabled:
                    breakers.append(key.breaker)
            for breaker in breakers:
                breaker_state.add_metric([name, breaker.key], breaker.state)
                for to, count in breaker.transitions.items():
                    transitions.add_metric([name, breaker.key, to], count)
            for reason, count in sorted(client.retries.items()):
                retries.add_metric([name, reason], count)
            rejections.add_metric([name], client.fast_failures)
        yield from (key_state, key_requests, key_failures, breaker_state, transitions, retries, rejections)
