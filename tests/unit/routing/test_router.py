"""Plans (``routing.router``) and their execution (``routing.executor``) with fake providers, no network."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from gomodel_proxy.config.schema import (
    Config,
    FailoverSettings,
    FailoverTriggers,
    TargetConfig,
    VirtualModelConfig,
)
from gomodel_proxy.core.errors import GatewayError, ModelNotFoundError, UpstreamConnectionError
from gomodel_proxy.core.types import CallRecord
from gomodel_proxy.llmclient import CircuitOpenError
from gomodel_proxy.observability.metrics import Metrics
from gomodel_proxy.routing.executor import send_with_failover
from gomodel_proxy.routing.model_registry import ModelRegistry
from gomodel_proxy.routing.router import Candidate, Router


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))

    info = warning


class Answer:
    def __init__(self, status: int) -> None:
        self.status = status
        self.headers: Mapping[str, str] = {}
        self.released = False

    def release(self) -> None:
        self.released = True


class FakeProvider:
    def __init__(self, name: str, up: bool = True) -> None:
        self.name = name
        self.up = up
        self.llm_client = self

    def available(self) -> bool:
        return self.up


def router(chains: dict[str, list[str]] | None = None, models: dict[str, Any] | None = None,
           names: tuple[str, ...] = ("a", "b", "c"), timeout_ms: float = 100) -> tuple[Router, Log, Metrics]:
    providers: dict[str, Any] = {n: FakeProvider(n) for n in names}
    metrics, log = Metrics(), Log()
    registry = ModelRegistry(providers, cache_file=None, refresh_s=60, fetch_timeout_s=1, metrics=metrics, logger=log)
    config = Config(models=models or {})
    config.failover = FailoverSettings(chains=chains or {}, triggers=FailoverTriggers(timeout_ms=timeout_ms))
    return Router(config, registry, metrics, log), log, metrics


def ids(plan: list[Candidate]) -> list[str]:
    return [c.qualified for c in plan]


def test_nothing_configured_is_inactive() -> None:
    r, _, _ = router()
    assert r.active is False
    assert ids(r.plan("a/x")) == ["a/x"]


def test_model_chains_win_over_provider_chains_and_wildcards_keep_the_name() -> None:
    r, _, _ = router({"a/x": ["b/y", "c/x"], "a/*": ["c/*", "b/*"]})
    assert r.active
    assert ids(r.plan("a/x")) == ["a/x", "b/y", "c/x"]
    assert ids(r.plan("a/other")) == ["a/other", "c/other", "b/other"]
    assert ids(r.plan("b/x")) == ["b/x"]


def test_duplicates_and_unknown_providers_are_left_out() -> None:
    r, _, _ = router({"a/x": ["b/y", "b/y", "a/x", "gone/z"]})
    assert ids(r.plan("a/x")) == ["a/x", "b/y"]


def test_alias_and_virtual_model() -> None:
    smart = VirtualModelConfig(strategy="round_robin", targets=[TargetConfig("a/x"), TargetConfig("b/y")])
    r, _, _ = router({"b/y": ["c/y"]}, models={"fast": "b/y", "smart": smart})
    assert ids(r.plan("fast")) == ["b/y", "c/y"]  # the alias' target's chain applies
    assert ids(r.plan("smart")) == ["a/x", "b/y"]
    assert ids(r.plan("smart")) == ["b/y", "a/x"]
    assert all(c.stats is not None for c in r.plan("smart"))
    r.registry.providers["a"].up = False  # type: ignore[attr-defined]
    assert ids(r.plan("smart")) == ["b/y", "a/x"]
    assert ids(r.plan("smart")) == ["b/y", "a/x"]  # a skipped while its breaker is open
    assert [m["id"] for m in r.listed()] == ["fast", "smart"]
    with pytest.raises(ModelNotFoundError):
        r.plan("nobody")


async def run(r: Router, plan: list[Candidate], outcomes: dict[str, Any]) -> tuple[str, Any, CallRecord]:
    call = CallRecord(request_id="r1", endpoint="chat.completions")

    async def send(c: Candidate) -> Any:
        outcome = outcomes[c.qualified]
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, float):
            await asyncio.sleep(outcome)
            return Answer(200)
        return outcome

    chosen, answer = await send_with_failover(r, call, plan, send)
    return chosen.qualified, answer, call


async def test_executor_moves_on_triggers_and_records_each_step() -> None:
    r, log, metrics = router({"a/x": ["b/x", "c/x"]})
    first = Answer(503)
    outcomes = {"a/x": first, "b/x": CircuitOpenError("open"), "c/x": Answer(200)}
    chosen, answer, call = await run(r, r.plan("a/x"), outcomes)
    assert chosen == "c/x" and answer.status == 200 and first.released
    assert [(s.from_model, s.to_model, s.reason) for s in call.failovers] == [
        ("a/x", "b/x", "status_503"), ("b/x", "c/x", "circuit_open")]
    assert (call.provider, call.model) == ("c", "x")
    assert [e for e, _ in log.lines] == ["failover", "failover"]
    value = metrics.registry.get_sample_value(
        "gomodel_failovers_total", {"from_provider": "a", "to_provider": "b", "reason": "status_503"})
    assert value == 1


async def test_executor_does_not_move_on_other_statuses_or_errors() -> None:
    r, _, _ = router({"a/x": ["b/x"]})
    chosen, answer, call = await run(r, r.plan("a/x"), {"a/x": Answer(400), "b/x": Answer(200)})
    assert chosen == "a/x" and answer.status == 400 and call.failovers == ()
    with pytest.raises(GatewayError) as info:
        await run(r, r.plan("a/x"), {"a/x": GatewayError("bad", status=400), "b/x": Answer(200)})
    assert info.value.status == 400


async def test_executor_deadline_cancels_a_slow_target_but_not_the_last() -> None:
    r, _, _ = router({"a/x": ["b/x"]}, timeout_ms=50)
    chosen, _, call = await run(r, r.plan("a/x"), {"a/x": 5.0, "b/x": 0.12})
    assert chosen == "b/x" and [s.reason for s in call.failovers] == ["timeout"]  # b: 120 ms, past 50, kept


async def test_the_last_target_s_error_is_raised() -> None:
    r, _, _ = router({"a/x": ["b/x"]})
    with pytest.raises(UpstreamConnectionError):
        await run(r, r.plan("a/x"), {"a/x": Answer(500), "b/x": UpstreamConnectionError("refused")})


async def test_in_flight_counts_follow_the_attempts() -> None:
    smart = VirtualModelConfig(strategy="least_in_flight", targets=[TargetConfig("a/x"), TargetConfig("b/y")])
    r, _, _ = router(models={"smart": smart})
    plan = r.plan("smart")
    chosen, _, _ = await run(r, plan, {"a/x": Answer(502), "b/y": Answer(200)})
    assert chosen == "b/y"
    a, b = r.virtual["smart"].targets
    assert (a.in_flight, b.in_flight) == (0, 1)  # b's answer is being relayed; the handler ends it
    assert b.ewma_s is not None and a.ewma_s is None
