"""The virtual models' strategies, on their own (``routing.balancer``): shares, order, skips."""

from __future__ import annotations

import collections
import random

from gomodel_proxy.config.schema import TargetConfig, VirtualModelConfig
from gomodel_proxy.routing.balancer import VirtualModel


def vm(strategy: str, *targets: tuple[str, float]) -> VirtualModel:
    return VirtualModel("smart", VirtualModelConfig(
        strategy=strategy,  # type: ignore[arg-type]
        targets=[TargetConfig(model=m, weight=w) for m, w in targets],
    ))


def firsts(model: VirtualModel, n: int, down: frozenset[str] = frozenset()) -> list[str]:
    return [model.order(lambda m: m not in down)[0].model for _ in range(n)]


def test_weighted_gives_exact_shares_interleaved() -> None:
    model = vm("weighted", ("a/x", 3), ("b/y", 1))
    got = firsts(model, 40)
    assert collections.Counter(got) == {"a/x": 30, "b/y": 10}
    assert all(collections.Counter(got[i:i + 4]) == {"a/x": 3, "b/y": 1} for i in range(0, 40, 4))


def test_weighted_with_three_targets_and_fractional_weights() -> None:
    model = vm("weighted", ("a/x", 0.5), ("b/y", 1), ("c/z", 2.5))
    assert collections.Counter(firsts(model, 80)) == {"a/x": 10, "b/y": 20, "c/z": 50}


def test_round_robin_order_and_the_rest_as_failover_order() -> None:
    model = vm("round_robin", ("a/x", 1), ("b/y", 1), ("c/z", 1))
    orders = [[t.model for t in model.order(lambda _m: True)] for _ in range(3)]
    assert [o[0] for o in orders] == ["a/x", "b/y", "c/z"]
    assert orders[1] == ["b/y", "a/x", "c/z"]  # every target present once


def test_unavailable_targets_are_skipped_but_kept_last() -> None:
    model = vm("round_robin", ("a/x", 1), ("b/y", 1), ("c/z", 1))
    assert firsts(model, 4, frozenset({"b/y"})) == ["a/x", "c/z", "a/x", "c/z"]
    order = [t.model for t in model.order(lambda m: m != "a/x")]
    assert order[-1] == "a/x"
    # Every target down: they are still all tried (their breakers refuse in microseconds).
    assert sorted(t.model for t in model.order(lambda _m: False)) == ["a/x", "b/y", "c/z"]


def test_weighted_skips_unavailable_targets() -> None:
    model = vm("weighted", ("a/x", 3), ("b/y", 1))
    assert firsts(model, 5, frozenset({"a/x"})) == ["b/y"] * 5


def test_least_in_flight_picks_the_least_busy() -> None:
    model = vm("least_in_flight", ("a/x", 1), ("b/y", 1), ("c/z", 1))
    a, b, c = model.targets
    a.in_flight, b.in_flight, c.in_flight = 4, 1, 2
    assert firsts(model, 2) == ["b/y", "b/y"]
    b.in_flight = 9
    assert firsts(model, 1) == ["c/z"]
    assert firsts(model, 1, frozenset({"c/z"})) == ["a/x"]


def test_lowest_latency_measures_each_then_prefers_the_fastest() -> None:
    model = vm("lowest_latency", ("a/x", 1), ("b/y", 1))
    a, b = model.targets
    assert firsts(model, 1) == ["a/x"]  # nothing measured: the first unmeasured
    a.observe_ttfb(0.200)
    assert firsts(model, 1) == ["b/y"]  # b not measured yet
    b.observe_ttfb(0.050)
    assert firsts(model, 3) == ["b/y"] * 3
    for _ in range(10):  # b slows down: the EWMA follows
        b.observe_ttfb(0.400)
    assert b.ewma_s is not None and b.ewma_s > 0.2
    assert firsts(model, 1) == ["a/x"]


def test_ewma_weights_the_newest_sample() -> None:
    model = vm("lowest_latency", ("a/x", 1))
    t = model.targets[0]
    t.observe_ttfb(1.0)
    t.observe_ttfb(2.0)
    assert t.ewma_s is not None and abs(t.ewma_s - 1.3) < 1e-9


def test_weighted_random_draws_in_proportion_and_skips_unavailable() -> None:
    model = VirtualModel("smart", VirtualModelConfig(
        strategy="weighted_random",
        targets=[TargetConfig(model="a/x", weight=3), TargetConfig(model="b/y", weight=1)],
    ), rng=random.Random(7))
    got = collections.Counter(firsts(model, 4000))
    # 3:1 expected; with 4,000 draws the share of a/x lies within 0.72-0.78 (about 6 standard deviations).
    assert 0.72 < got["a/x"] / 4000 < 0.78
    assert set(firsts(model, 50, down=frozenset({"a/x"}))) == {"b/y"}
    order = model.order(lambda m: True)
    assert sorted(t.model for t in order) == ["a/x", "b/y"]
