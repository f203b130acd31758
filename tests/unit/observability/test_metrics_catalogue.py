"""The metrics added for the catalogue, and the catalogue itself (docs/metrics.md) against a real render."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gomodel_proxy.core.errors import BudgetExceededError, GatewayError, RateLimitError
from gomodel_proxy.core.types import CallRecord
from gomodel_proxy.limits.token_bucket import Decision, rate_limit_error
from gomodel_proxy.llmclient.metrics import ResilienceCollector
from gomodel_proxy.observability.governance_metrics import GovernanceCollector
from gomodel_proxy.observability.metrics import InFlightStreams, Metrics
from gomodel_proxy.observability.recorder import RequestRecorder

DOC = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"


def values(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_cost_refusals_and_streams() -> None:
    metrics = Metrics()
    streams: set[Any] = {object(), object()}
    metrics.add_collector(InFlightStreams(streams))
    metrics.observe_cost(CallRecord(request_id="r", endpoint="x", provider="p", model="m", cost=Decimal("0.25")))
    metrics.observe_cost(CallRecord(request_id="r", endpoint="x", provider="p", model="m", cost=Decimal("0.5")))
    metrics.observe_cost(CallRecord(request_id="r", endpoint="x", provider="p", model="m"))  # unpriced
    assert values(metrics, "gomodel_cost_usd_total") == {(("model", "m"), ("provider", "p")): 0.75}
    metrics.refusal(rate_limit_error(Decision(False, 1.0, "key:k-1 tpm", 60, 0, 1.0, 10, 0, 1.0)))
    metrics.refusal(rate_limit_error(Decision(False, 1.0, "global rpm", 1, 0, 1.0, None, None, None)))
    metrics.refusal(RateLimitError("something else"))
    metrics.refusal(BudgetExceededError("Budget of team t exhausted"))
    metrics.refusal(GatewayError("a provider's own 429 is not the gateway's refusal", status=429))
    metrics.refusal(GatewayError(""))
    assert values(metrics, "gomodel_rate_limit_refusals_total") == {
        (("dimension", "tpm"), ("scope", "key")): 1.0, (("dimension", "rpm"), ("scope", "global")): 1.0,
        (("dimension", "other"), ("scope", "other")): 1.0,
    }
    assert values(metrics, "gomodel_budget_refusals_total") == {(): 1.0}
    assert values(metrics, "gomodel_in_flight_streams") == {(): 2.0}


class FailingExporter:
    def record(self, call: CallRecord) -> None:
        raise RuntimeError("exporter bug")


class Log:
    def __init__(self) -> None:
        self.events: list[str] = []

    def exception(self, event: str, **_: Any) -> None:
        self.events.append(event)

    def info(self, event: str, **_: Any) -> None:
        self.events.append(event)


def test_recorder_prices_and_exports_without_failing() -> None:
    metrics = Metrics()
    log = Log()
    recorder = RequestRecorder(metrics, log, access_log=False)
    seen: list[CallRecord] = []

    def sink(call: CallRecord) -> None:
        call.cost = Decimal("0.001")  # what the usage record's pricing does

    recorder.usage_sink = sink
    recorder.tracer = FailingExporter()
    recorder.dogstatsd = SimpleNamespace(record=seen.append)
    call = CallRecord(request_id="r", endpoint="chat.completions", provider="p", model="m", status=200)
    recorder.record(call)
    assert seen == [call]  # the other exporter still got it
    assert log.events == ["telemetry export failed"]
    assert values(metrics, "gomodel_cost_usd_total") == {(("model", "m"), ("provider", "p")): 0.001}


def test_catalogue_lists_every_metric() -> None:
    """Every family the gateway can render is in docs/metrics.md (with its exposition name)."""
    metrics = Metrics()
    metrics.add_collector(InFlightStreams(set()))
    key = SimpleNamespace(keyless=False, fingerprint="abcd1234", state=lambda now: 0, requests=1,
                          failures={"timeout": 1}, breaker=SimpleNamespace(enabled=True, key="abcd1234", state=0,
                                                                           transitions={"open": 1}))
    client = SimpleNamespace(name="p", clock=lambda: 0.0, breaker=SimpleNamespace(key="", state=0, transitions={}),
                             keyring=SimpleNamespace(keys=[key]), retries={"timeout": 1}, fast_failures=0)
    metrics.add_collector(ResilienceCollector([client]))  # type: ignore[list-item]
    writer = SimpleNamespace(written=1, spooled=0, replayed=0, rejected=0, pending=0, state="ok")
    audit = SimpleNamespace(stats=lambda: {"written": 5, "spilled": 2, "replayed": 2, "dropped": 0, "queued": 3})
    gov = SimpleNamespace(writer=writer, guard=SimpleNamespace(degraded=0, available=True),
                          keys=SimpleNamespace(live_count=0), audit=audit)
    metrics.add_collector(GovernanceCollector(gov))
    call = CallRecord(request_id="r", endpoint="chat.completions", provider="p", model="m", status=200)
    call.first_byte_at = call.finished = call.started
    metrics.observe(call)
    text = metrics.render().decode()
    names = set()
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):  # the timestamps prometheus_client adds to counters
            continue
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    documented = set(re.findall(r"`(gomodel_[a-z_]+)`", DOC.read_text(encoding="utf-8")))
    assert names - documented == set()
    assert "gomodel_cost_usd_total" in names and "gomodel_in_flight_streams" in names
    assert "gomodel_audit_entries_total" in names and "gomodel_audit_queue" in names
    assert 'gomodel_audit_entries_total{state="spilled"} 2.0' in text and "gomodel_audit_queue 3.0" in text
