"""Metrics.observe / render: what a finished request adds to each collector."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from gomodel_proxy.core.types import CallRecord, Usage
from gomodel_proxy.observability import metrics as metrics_module
from gomodel_proxy.observability.metrics import Metrics, observe_many


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the rendered text, keyed by name and sorted labels."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def streamed_call() -> CallRecord:
    return CallRecord(
        request_id="r1", endpoint="chat.completions", started=100.0, stream=True, model_requested="openai/gpt",
        provider="openai", model="gpt", status=200, usage=Usage(input_tokens=12, output_tokens=30, cached_tokens=4),
        upstream_started=100.001, upstream_answered_at=100.2, first_byte_at=100.2015, finished=101.5,
    )


def test_observe_counts_the_request_its_timings_and_tokens() -> None:
    metrics = Metrics()
    metrics.observe(streamed_call())
    got = samples(metrics)
    request = labels(provider="openai", model="gpt", endpoint="chat.completions", status="200", stream="true")
    assert got[("gomodel_requests_total", request)] == 1.0
    timing = labels(provider="openai", endpoint="chat.completions", stream="true")
    assert got[("gomodel_request_duration_seconds_count", timing)] == 1.0
    assert got[("gomodel_request_duration_seconds_sum", timing)] == pytest.approx(1.5)
    for le, count in (("1.0", 0.0), ("2.5", 1.0), ("+Inf", 1.0)):
        bucket = labels(provider="openai", endpoint="chat.completions", stream="true", le=le)
        assert got[("gomodel_request_duration_seconds_bucket", bucket)] == count
    assert got[("gomodel_time_to_first_byte_seconds_sum", timing)] == pytest.approx(0.2015)
    assert got[("gomodel_overhead_seconds_sum", labels(endpoint="chat.completions"))] == pytest.approx(0.0025)
    tokens = {kind: got.get(("gomodel_tokens_total", labels(provider="openai", model="gpt", kind=kind)))
              for kind in ("input", "output", "cached", "reasoning")}
    assert tokens == {"input": 12.0, "output": 30.0, "cached": 4.0, "reasoning": None}  # zero kinds not counted


def test_repeated_observations_accumulate() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.observe(streamed_call())
    got = samples(metrics)
    request = labels(provider="openai", model="gpt", endpoint="chat.completions", status="200", stream="true")
    assert got[("gomodel_requests_total", request)] == 3.0
    assert got[("gomodel_tokens_total", labels(provider="openai", model="gpt", kind="output"))] == 90.0


def test_error_without_first_byte_or_usage() -> None:
    metrics = Metrics()
    metrics.observe(CallRecord(request_id="r2", endpoint="embeddings", started=1.0, status=404, finished=1.01))
    got = samples(metrics)
    request = labels(provider="", model="", endpoint="embeddings", status="404", stream="false")
    assert got[("gomodel_requests_total", request)] == 1.0
    assert not any(name.startswith("gomodel_time_to_first_byte_seconds_count") for name, _ in got)
    assert not any(name == "gomodel_tokens_total" for name, _ in got)


def test_in_flight_and_model_gauges() -> None:
    metrics = Metrics()
    child = metrics.in_flight_child("chat.completions")
    assert metrics.in_flight_child("chat.completions") is child
    child.inc()
    child.inc()
    child.dec()
    metrics.provider_models.labels("openai").set(7)
    metrics.model_list_failures.labels("groq").inc()
    got = samples(metrics)
    assert got[("gomodel_in_flight_requests", labels(endpoint="chat.completions"))] == 1.0
    assert got[("gomodel_provider_models", labels(provider="openai"))] == 7.0
    assert got[("gomodel_model_list_failures_total", labels(provider="groq"))] == 1.0


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.observe(streamed_call())
    assert any(name == "gomodel_requests_total" for name, _ in samples(first))
    assert not any(name == "gomodel_requests_total" for name, _ in samples(second))


def test_multiprocess_render_reads_the_shared_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics()
    metrics.observe(streamed_call())
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    # This process wrote nothing to the (empty) directory: the in-process registry is not what renders.
    assert b"gomodel_requests_total" not in metrics.render()
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert b"gomodel_requests_total" in metrics.render()


def test_observe_many_matches_one_observe_per_value() -> None:
    """The batched histogram update (bucket counts and sum added once) renders what per-value
    ``observe`` renders, values on bucket bounds included."""
    values = [0.0, 0.00005, 0.0001, 0.0002, 0.00025, 0.004, 0.01, 0.3, 7.0, 1e9]
    rendered = []
    for batched in (False, True):
        registry = CollectorRegistry()
        child = Histogram("h", "h", ["e"], buckets=(0.0001, 0.00025, 0.01, 1.0), registry=registry).labels("x")
        if batched:
            observe_many(child, values)
        else:
            for value in values:
                child.observe(value)
        rendered.append({(s.name, tuple(sorted(s.labels.items()))): s.value
                         for f in registry.collect() for s in f.samples if not s.name.endswith("_created")})
    assert rendered[0] == rendered[1]
    assert rendered[1][("h_count", (("e", "x"),))] == len(values)


async def test_calls_are_added_in_batches_and_before_a_scrape() -> None:
    """Inside a loop, observe() queues; the queue is added at a scrape, at FLUSH_CALLS, or FLUSH_S later."""
    metrics = Metrics()
    call = CallRecord(request_id="b", endpoint="chat.completions", started=1.0, status=200, finished=1.01)
    request = ("gomodel_requests_total",
               labels(provider="", model="", endpoint="chat.completions", status="200", stream="false"))
    metrics.observe(call)
    assert metrics._pending == [call]
    assert samples(metrics)[request] == 1.0  # a scrape adds what is queued first
    for _ in range(metrics_module.FLUSH_CALLS):
        metrics.observe(call)
    assert len(metrics._pending) == metrics_module.FLUSH_CALLS  # the request that filled it is not held up
    await asyncio.sleep(0)
    assert metrics._pending == []  # a full batch is added in the loop's next turn
    metrics.observe(call)
    await asyncio.sleep(metrics_module.FLUSH_S + 0.2)
    assert metrics._pending == []  # and a partial one FLUSH_S after its first call
    assert samples(metrics)[request] == 2.0 + metrics_module.FLUSH_CALLS


def test_outside_a_loop_calls_are_added_at_once() -> None:
    metrics = Metrics()
    call = CallRecord(request_id="c", endpoint="chat.completions", started=1.0, status=200, finished=1.01)
    request = ("gomodel_requests_total",
               labels(provider="", model="", endpoint="chat.completions", status="200", stream="false"))
    for n in range(1, 4):
        metrics.observe(call)
        assert metrics._pending == []
        assert samples(metrics)[request] == n
