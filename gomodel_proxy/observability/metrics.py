"""Prometheus metrics of the gateway.

Labels are bounded: provider and model names come from configuration and the providers' model lists,
never from raw client input (a request for an unknown model is counted under ``model=""``).
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from collections.abc import Collection, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gomodel_proxy.core.errors import BudgetExceededError, GatewayError, RateLimitError
from gomodel_proxy.core.types import CallRecord

#: A batch of finished calls is added to the collectors at the latest this long after its first call...
FLUSH_S = 1.0
#: ... or once it is this long: soon after the request that filled it, in a callback of its own (its answer
#: is not held back), and short, since a flush holds the loop about 1.1 µs a call (64 calls: 75 µs).
FLUSH_CALLS = 64
#: Buckets for request latency: LLM calls span milliseconds (cache, errors) to minutes (long streams).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: Buckets for the gateway's own overhead: targets are well under a millisecond.
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class Metrics:
    """The collectors, registered in a registry of their own (one per app, so tests may build many)."""

    def __init__(self) -> None:
        self._children: dict[tuple[Any, ...], Any] = {}
        #: Finished calls not yet added to the collectors, and in-flight changes by endpoint (``flush``).
        self._pending: list[CallRecord] = []
        #: Prices not added to the cost counter yet, by (provider, model): flushed with the calls.
        self._pending_cost: dict[tuple[str, str], float] = {}
        self._in_flight_deltas: dict[str, int] = {}
        self._flush_timer: asyncio.TimerHandle | None = None
        #: A flush is scheduled to run soon (a full batch waits).
        self._flush_soon = False
        self._in_flight_gauges: dict[str, InFlight] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # First in the registry, so that whoever collects it sees the calls queued until then.
        r.register(_FlushFirst(self))
        self.requests = Counter(
            "gomodel_requests", "Requests answered, by provider, model, endpoint, status and stream.",
            ["provider", "model", "endpoint", "status", "stream"], registry=r,
        )
        self.duration = Histogram(
            "gomodel_request_duration_seconds", "Time from request to the last byte of the answer.",
            ["provider", "endpoint", "stream"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.ttfb = Histogram(
            "gomodel_time_to_first_byte_seconds", "Time from request to the first byte of the answer.",
            ["provider", "endpoint", "stream"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.overhead = Histogram(
            "gomodel_overhead_seconds", "Time spent in the gateway itself, excluding the provider.",
            ["endpoint"], buckets=_OVERHEAD_BUCKETS, registry=r,
        )
        self.tokens = Counter(
            "gomodel_tokens", "Tokens used, by provider, model and kind (input, output, cached, reasoning).",
            ["provider", "model", "kind"], registry=r,
        )
        self.in_flight = Gauge(
            "gomodel_in_flight_requests", "Requests being answered now.", ["endpoint"], registry=r,
            multiprocess_mode="livesum",
        )
        self.provider_models = Gauge(
            "gomodel_provider_models", "Models known per provider (0 while its list is unknown).",
            ["provider"], registry=r, multiprocess_mode="max",
        )
        self.model_list_failures = Counter(
            "gomodel_model_list_failures", "Failed fetches of a provider's model list.", ["provider"],
            registry=r,
        )
        self.failovers = Counter(
            "gomodel_failovers", "Requests moved to the next target of their failover chain, by reason.",
            ["from_provider", "to_provider", "reason"], registry=r,
        )
        self.guardrail_decisions = Counter(
            "gomodel_guardrail_decisions", "Guardrail decisions, by guardrail, stage (input, output) and action "
            "(block, redact, restore, log, rewrite, clamp).", ["guardrail", "stage", "action"], registry=r,
        )
        self.cache_lookups = Counter(
            "gomodel_cache_lookups", "Response cache lookups, by API and result (hit, semantic_hit, miss, bypass, "
            "error).", ["api", "result"], registry=r,
        )
        self.cache_stores = Counter(
            "gomodel_cache_stores", "Answers offered to the response cache, by result (stored, too_large, error).",
            ["result"], registry=r,
        )
        self.config_reloads = Counter(
            "gomodel_config_reloads", "Configuration reloads (SIGHUP, POST /admin/reload), by result (applied, "
            "unchanged, refused).", ["result"], registry=r,
        )
        self.cost = Counter(
            "gomodel_cost_usd", "Price of the calls in USD, by provider and model (calls the gateway priced).",
            ["provider", "model"], registry=r,
        )
        self.rate_limit_refusals = Counter(
            "gomodel_rate_limit_refusals", "Requests refused by the gateway's rate limits, by the limit's scope "
            "(key, user, team, global) and dimension (rpm, tpm).", ["scope", "dimension"], registry=r,
        )
        self.budget_refusals = Counter(
            "gomodel_budget_refusals", "Requests refused because a budget had no room left.", registry=r,
        )
        #: Collectors read when scraped (the keys' and circuit breakers' state, ``llmclient.metrics``).
        self._collectors: list[Collector] = []

    def add_collector(self, collector: Collector) -> None:
        """A collector of this process's state, read at each scrape."""
        self._collectors.append(collector)
        self.registry.register(collector)

    def _child(self, metric: Any, *labels: str) -> Any:
        # prometheus_client's labels() takes a lock and builds a tuple each call; the gateway sees
        # few distinct label sets, so their children are kept here.
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def guardrail_decision(self, guardrail: str, stage: str, action: str) -> None:
        self._child(self.guardrail_decisions, guardrail, stage, action).inc()

    def cache_lookup(self, api: str, result: str) -> None:
        self._child(self.cache_lookups, api, result).inc()

    def cache_store(self, result: str) -> None:
        self._child(self.cache_stores, result).inc()

    def in_flight_child(self, endpoint: str) -> InFlight:
        gauge = self._in_flight_gauges.get(endpoint)
        if gauge is None:
            gauge = self._in_flight_gauges[endpoint] = InFlight(self, endpoint)
        return gauge

    def observe(self, call: CallRecord) -> None:
        """Count a finished call: queued, and added to the collectors in batches (``flush``).

        prometheus_client takes a lock per value and walks a histogram's buckets per observation; a batch
        adds each label set's count once and each histogram's bucket counts once, which costs a request
        a fraction of it. A batch is flushed at the latest ``FLUSH_S`` after its first call, when it is
        ``FLUSH_CALLS`` long, and before every scrape.
        """
        pending = self._pending
        pending.append(call)
        if len(pending) >= FLUSH_CALLS:
            if not self._flush_soon:
                self._flush_soon = True
                try:
                    asyncio.get_running_loop().call_soon(self.flush)
                except RuntimeError:  # pragma: no cover - without a loop every call is flushed at once
                    self.flush()
        elif self._flush_timer is None:
            self._flush_later()

    def _flush_later(self) -> None:
        try:
            self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)
        except RuntimeError:  # no loop (a tool, a test): at once
            self.flush()

    def flush(self) -> None:
        """Add the queued calls and in-flight changes to the collectors."""
        self._flush_soon = False
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        deltas, self._in_flight_deltas = self._in_flight_deltas, {}
        for endpoint, delta in deltas.items():
            gauge = self._child(self.in_flight, endpoint)  # the series exists from the first request on
            if delta:
                gauge.inc(delta)
        if self._pending_cost:
            costs, self._pending_cost = self._pending_cost, {}
            for (provider, model), amount in costs.items():
                self._child(self.cost, provider, model).inc(amount)
        pending, self._pending = self._pending, []
        if not pending:
            return
        counts: dict[tuple[str, ...], int] = {}
        tokens: dict[tuple[str, ...], int] = {}
        durations: dict[tuple[str, ...], list[float]] = {}
        ttfbs: dict[tuple[str, ...], list[float]] = {}
        overheads: dict[str, list[float]] = {}
        for call in pending:
            stream = "true" if call.stream else "false"
            key = (call.provider, call.model, call.endpoint, str(call.status), stream)
            counts[key] = counts.get(key, 0) + 1
            where = (call.provider, call.endpoint, stream)
            durations.setdefault(where, []).append(call.latency_s)
            ttfb = call.ttfb_s
            if ttfb is not None:
                ttfbs.setdefault(where, []).append(ttfb)
            overheads.setdefault(call.endpoint, []).append(call.overhead_s)
            usage = call.usage
            if usage is not None:
                for kind, value in (("input", usage.input_tokens), ("output", usage.output_tokens),
                                    ("cached", usage.cached_tokens), ("reasoning", usage.reasoning_tokens)):
                    if value:
                        kind_key = (call.provider, call.model, kind)
                        tokens[kind_key] = tokens.get(kind_key, 0) + value
        for labels, count in counts.items():
            self._child(self.requests, *labels).inc(count)
        for labels, amount in tokens.items():
            self._child(self.tokens, *labels).inc(amount)
        for labels, values in durations.items():
            observe_many(self._child(self.duration, *labels), values)
        for labels, values in ttfbs.items():
            observe_many(self._child(self.ttfb, *labels), values)
        for endpoint, values in overheads.items():
            observe_many(self._child(self.overhead, endpoint), values)

    def observe_cost(self, call: CallRecord) -> None:
        """The call's price, once known (after the usage record priced it; ``RequestRecorder``): queued and
        added with the next ``flush``, like the calls (a counter's ``inc`` takes a lock per call)."""
        cost = call.cost
        if cost:
            costs = self._pending_cost
            key = (call.provider, call.model)
            costs[key] = costs.get(key, 0.0) + float(cost)
            if self._flush_timer is None:
                self._flush_later()

    def refusal(self, exc: GatewayError) -> None:
        """A request the gateway's own limits refused (the edge calls this for every 429 it answers)."""
        if isinstance(exc, RateLimitError):
            self._child(self.rate_limit_refusals, exc.scope, exc.dimension).inc()
        elif isinstance(exc, BudgetExceededError):
            self.budget_refusals.inc()

    def render(self) -> bytes:
        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Several worker processes: each writes its values to files, any of them renders them all.
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            for collector in self._collectors:  # per-process state: this worker's
                registry.register(collector)
            return generate_latest(registry)
        return generate_latest(self.registry)


class _FlushFirst(Collector):
    """Registered first: a scrape of the registry adds the queued calls before the metrics are read."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        self.metrics.flush()
        return iter(())


class InFlight:
    """``gomodel_in_flight_requests`` of one endpoint: changes are added at the next flush, where a
    request's +1 and -1 in the same batch cancel out."""

    __slots__ = ("_deltas", "_endpoint", "_metrics")

    def __init__(self, metrics: Metrics, endpoint: str) -> None:
        self._metrics = metrics
        self._endpoint = endpoint

    def inc(self) -> None:
        deltas = self._metrics._in_flight_deltas
        deltas[self._endpoint] = deltas.get(self._endpoint, 0) + 1

    def dec(self) -> None:
        deltas = self._metrics._in_flight_deltas
        deltas[self._endpoint] = deltas.get(self._endpoint, 0) - 1


def observe_many(child: Any, values: list[float]) -> None:
    """``child.observe(v)`` for each of ``values``, with each bucket and the sum added once.

    Uses the histogram child's value cells (``_upper_bounds``, ``_buckets``, ``_sum``: the same in
    prometheus_client's single- and multi-process modes); without them, one ``observe`` per value.
    """
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None:  # pragma: no cover - another prometheus_client
        for value in values:
            child.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bucket whose bound is >= value, as observe()
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)
    total.inc(sum(values))


class InFlightStreams(Collector):
    """``gomodel_in_flight_streams``: streamed answers being relayed now (the server's ``streams`` set)."""

    def __init__(self, streams: Collection[Any]) -> None:
        self.streams = streams

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("gomodel_in_flight_streams", "Streamed answers being relayed now.",
                                value=float(len(self.streams)))
