"""The chain's RateLimit and Budget steps, and the call pricer they share, as units.

The limiter is a real ``MemoryRateLimiter`` behind a recorder (so the test sees every acquire and
charge); the ledger a real ``MemoryLedger``; prices a ``PriceTable`` built from a pricing config.
Settlements run at once (``charge_nowait``/``settle_nowait``), so the test sees them when ``process`` returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from gomodel_proxy.billing.call_cost import CallPricer
from gomodel_proxy.billing.ledger import BudgetLimit, MemoryLedger
from gomodel_proxy.billing.pricing import PriceTable
from gomodel_proxy.config.schema import ModelPriceConfig, PricingConfig, RateLimitPair, RateLimitsConfig
from gomodel_proxy.core.errors import BudgetExceededError, RateLimitError
from gomodel_proxy.core.interfaces import RequestContext
from gomodel_proxy.core.types import CallRecord, Principal, Usage
from gomodel_proxy.limits.token_bucket import Decision, Limit, MemoryRateLimiter, unlimited
from gomodel_proxy.middleware.budget import Budget
from gomodel_proxy.middleware.key_cache import KeyCache
from gomodel_proxy.middleware.ratelimit import RateLimit, estimated_tokens
from gomodel_proxy.storage.repository import BudgetRow, TeamRow, UserRow
from gomodel_proxy.storage.tables import utcnow

NOW = utcnow()
KEY = Principal(kind="key", key_id="k1", user_id="alice", team_id="research")


class RecordingLimiter:
    """A real in-memory limiter whose calls are noted; ``decision`` overrides its answer when set."""

    def __init__(self, decision: Decision | None = None) -> None:
        self.real = MemoryRateLimiter()
        self.decision = decision
        self.acquired: list[tuple[list[Limit], int]] = []
        self.charged: list[tuple[list[Limit], int]] = []

    async def acquire(self, limits: Sequence[Limit], tokens: int) -> Decision:
        self.acquired.append((list(limits), tokens))
        real = await self.real.acquire(limits, tokens)
        return self.decision or real

    async def charge(self, limits: Sequence[Limit], tokens: int) -> None:
        self.charge_nowait(limits, tokens)

    def charge_nowait(self, limits: Sequence[Limit], tokens: int) -> None:
        self.charged.append((list(limits), tokens))
        self.real.charge_nowait(limits, tokens)

    async def close(self) -> None:
        await self.real.close()


def keys_with(*, users: Sequence[UserRow] = (), teams: Sequence[TeamRow] = (),
              budgets: Sequence[BudgetRow] = ()) -> KeyCache:
    cache = KeyCache(None, refresh_s=60, logger=None)  # type: ignore[arg-type]
    cache.users = {u.id: u for u in users}
    cache.teams = {t.id: t for t in teams}
    cache.budgets = {b.id: b for b in budgets}
    return cache


def user(uid: str, rpm: int | None = None, tpm: int | None = None) -> UserRow:
    return UserRow(uid, None, None, None, False, rpm, tpm, {}, NOW, NOW)


def team(tid: str, rpm: int | None = None, tpm: int | None = None) -> TeamRow:
    return TeamRow(tid, tid.title(), rpm, tpm, {}, NOW, NOW)


def budget(bid: str, max_budget: float, period: str = "monthly") -> BudgetRow:
    scope, _, subject = bid.partition(":")
    return BudgetRow(bid, scope, subject, max_budget, period, NOW, NOW)


def limits_config(default: tuple[int, int] = (0, 0), glob: tuple[int, int] = (0, 0)) -> RateLimitsConfig:
    return RateLimitsConfig(default_key=RateLimitPair(*default), global_=RateLimitPair(*glob))


def context(principal: Principal = KEY, *, body_bytes: int = 400, max_output: int | None = None,
            model: str = "m") -> RequestContext:
    call = CallRecord(request_id="r1", endpoint="chat", model_requested=f"mock/{model}", provider="mock",
                      model=model, principal=principal)
    return RequestContext(call, {"model": model}, body_bytes, max_output)


# -- the estimate ---------------------------------------------------------------------------------
def test_the_token_estimate_is_a_quarter_of_the_bytes_plus_the_cap() -> None:
    assert estimated_tokens(context(body_bytes=400)) == 101
    assert estimated_tokens(context(body_bytes=400, max_output=50)) == 151
    assert estimated_tokens(context(body_bytes=0)) == 1


# -- which limits apply ---------------------------------------------------------------------------
def _names(limits: list[Limit]) -> list[tuple[str, int, int]]:
    return [(lim.name, lim.rpm, lim.tpm) for lim in limits]


def test_a_keys_own_limits_win_over_the_default_and_the_default_fills_the_rest() -> None:
    step = RateLimit(RecordingLimiter(), limits_config(default=(10, 1000)), None)
    assert _names(step.limits_for(Principal(kind="key", key_id="k1", rpm=3))) == [("key:k1", 3, 1000)]
    assert _names(step.limits_for(Principal(kind="key", key_id="k1", tpm=50))) == [("key:k1", 10, 50)]
    assert _names(step.limits_for(Principal(kind="key", key_id="k1", rpm=0, tpm=0))) == []  # 0: unlimited
    unlimited_keys = RateLimit(RecordingLimiter(), limits_config(), None)
    assert unlimited_keys.limits_for(Principal(kind="key", key_id="k1")) == []


def test_user_team_and_global_limits_add_up_for_a_key() -> None:
    keys = keys_with(users=[user("alice", rpm=5)], teams=[team("research", tpm=900)])
    step = RateLimit(RecordingLimiter(), limits_config(glob=(1000, 0)), keys)
    assert _names(step.limits_for(KEY)) == [("user:alice", 5, 0), ("team:research", 0, 900), ("global", 1000, 0)]


def test_users_and_teams_without_limits_or_unknown_add_nothing() -> None:
    keys = keys_with(users=[user("alice")], teams=[team("research")])
    step = RateLimit(RecordingLimiter(), limits_config(), keys)
    assert step.limits_for(KEY) == []
    assert step.limits_for(Principal(kind="key", key_id="k2", user_id="ghost", team_id="nowhere")) == []


def test_a_jwt_principal_gets_its_user_and_team_limits_but_no_key_limit() -> None:
    keys = keys_with(users=[user("bob", rpm=2, tpm=20)], teams=[team("ops", rpm=7)])
    step = RateLimit(RecordingLimiter(), limits_config(default=(10, 100)), keys)
    jwt_user = Principal(kind="jwt", user_id="bob", team_id="ops")
    assert _names(step.limits_for(jwt_user)) == [("user:bob", 2, 20), ("team:ops", 7, 0)]


def test_without_a_key_cache_only_the_key_and_global_limits_apply() -> None:
    step = RateLimit(RecordingLimiter(), limits_config(default=(10, 0), glob=(0, 5000)), None)
    assert _names(step.limits_for(KEY)) == [("key:k1", 10, 0), ("global", 0, 5000)]
    assert _names(step.limits_for(Principal(kind="master", is_admin=True))) == [("global", 0, 5000)]


# -- admission and the TPM charge -----------------------------------------------------------------
async def test_no_limit_means_the_limiter_is_never_asked() -> None:
    limiter = RecordingLimiter()
    step = RateLimit(limiter, limits_config(), None)
    ctx = context()

    async def handler(got: RequestContext) -> str:
        return "ok"

    assert await step.process(ctx, handler) == "ok"
    assert limiter.acquired == [] and ctx.call.headers is None


async def test_an_admitted_request_gets_openai_headers_and_is_charged_its_real_usage() -> None:
    limiter = RecordingLimiter()
    step = RateLimit(limiter, limits_config(default=(10, 10_000)), None)
    ctx = context(max_output=50)
    ctx.call.headers = {"x-request-id": "r1"}

    async def handler(got: RequestContext) -> str:
        got.call.usage = Usage(input_tokens=90, output_tokens=20)
        return "ok"

    assert await step.process(ctx, handler) == "ok"
    assert limiter.acquired == [([Limit("key:k1", 10, 10_000)], 151)]
    headers = ctx.call.headers
    assert headers["x-request-id"] == "r1" and headers["x-ratelimit-limit-requests"] == "10"
    assert headers["x-ratelimit-limit-tokens"] == "10000"
    assert limiter.charged == [([Limit("key:k1", 10, 10_000)], 110 - 151)]  # the over-estimate given back


async def test_headers_are_set_on_a_call_that_had_none() -> None:
    step = RateLimit(RecordingLimiter(), limits_config(default=(10, 0)), None)
    ctx = context()

    async def handler(got: RequestContext) -> None:
        return None

    await step.process(ctx, handler)
    assert ctx.call.headers is not None and ctx.call.headers["x-ratelimit-remaining-requests"] == "9"


async def test_a_refused_request_raises_429_and_never_reaches_the_handler() -> None:
    refused = Decision(False, 2.5, "key:k1 rpm", 1, 0, 60.0, None, None, None)
    limiter = RecordingLimiter(refused)
    step = RateLimit(limiter, limits_config(default=(1, 0)), None)
    reached = False

    async def handler(got: RequestContext) -> None:
        nonlocal reached
        reached = True

    with pytest.raises(RateLimitError) as caught:
        await step.process(context(), handler)
    assert not reached and caught.value.status == 429
    assert caught.value.headers["retry-after"] == "3"  # type: ignore[index]


@pytest.mark.parametrize(("usage", "charge"), [
    (None, [-101]),  # no usage known (the call failed): the whole estimate is given back
    (Usage(input_tokens=100, output_tokens=1), []),  # exactly the estimate: nothing to charge
    (Usage(input_tokens=300, output_tokens=200), [399]),  # more than estimated: the rest is charged
])
async def test_the_tpm_charge_is_the_difference_to_the_estimate(usage: Usage | None, charge: list[int]) -> None:
    limiter = RecordingLimiter()
    step = RateLimit(limiter, limits_config(default=(0, 10_000)), None)

    async def handler(got: RequestContext) -> None:
        got.call.usage = usage

    await step.process(context(), handler)
    assert [tokens for _, tokens in limiter.charged] == charge


async def test_the_charge_happens_when_the_handler_raises() -> None:
    limiter = RecordingLimiter()
    step = RateLimit(limiter, limits_config(default=(0, 10_000)), None)

    async def handler(got: RequestContext) -> None:
        got.call.usage = Usage(input_tokens=10, output_tokens=5)
        raise ConnectionError("client left")

    with pytest.raises(ConnectionError):
        await step.process(context(), handler)
    assert [tokens for _, tokens in limiter.charged] == [15 - 101]


async def test_no_charge_without_a_tpm_limit_or_when_redis_was_down() -> None:
    for limiter, config in ((RecordingLimiter(), limits_config(default=(10, 0))),
                            (RecordingLimiter(unlimited(degraded=True)), limits_config(default=(0, 100)))):
        step = RateLimit(limiter, config, None)

        async def handler(got: RequestContext) -> None:
            got.call.usage = Usage(input_tokens=500, output_tokens=500)

        await step.process(context(), handler)
        assert len(limiter.acquired) == 1 and limiter.charged == []


# -- prices ---------------------------------------------------------------------------------------
PRICES = PriceTable.from_config(PricingConfig(models={"mock/m": ModelPriceConfig(input=1000.0, output=2000.0)}))
PROVIDERS: dict[str, Any] = {"mock": SimpleNamespace(kind="mock")}


def test_the_pricer_prices_by_the_providers_type_and_the_answering_model() -> None:
    pricer = CallPricer(PROVIDERS, PRICES)
    call = context().call
    assert pricer.cost(call, Usage(input_tokens=1000, output_tokens=500)) == Decimal("2")
    assert pricer.cost(context(model="unpriced").call, Usage(input_tokens=10)) is None
    call.provider = "gone"
    assert pricer.cost(call, Usage(input_tokens=10)) is None
    call.provider, call.model = "mock", ""
    assert pricer.cost(call, Usage(input_tokens=10)) is None


def test_settle_computes_the_cost_once_from_the_final_usage() -> None:
    pricer = CallPricer(PROVIDERS, PRICES)
    call = context().call
    assert pricer.settle(call) is None and call.cost is None  # no usage yet
    call.usage = Usage(input_tokens=10, output_tokens=10)
    assert pricer.settle(call) == Decimal("0.03") and call.cost == Decimal("0.03")
    call.usage = Usage(input_tokens=10_000)
    assert pricer.settle(call) == Decimal("0.03")  # already priced: kept
    assert pricer.settle_nano(call) == 30_000_000  # the same figure in nano-USD, not priced again


def test_settle_nano_is_zero_without_usage_or_price_and_cost_nano_needs_a_provider() -> None:
    pricer = CallPricer(PROVIDERS, PRICES)
    assert pricer.settle_nano(context().call) == 0  # no usage
    unpriced = context(model="unpriced").call
    unpriced.usage = Usage(input_tokens=10, output_tokens=10)
    assert pricer.settle_nano(unpriced) == 0 and unpriced.cost is None
    elsewhere = context().call
    elsewhere.provider = "gone"
    assert pricer.cost_nano(elsewhere, Usage(input_tokens=10)) is None


# -- budgets --------------------------------------------------------------------------------------
class Seeds:
    def __init__(self, spent: Decimal = Decimal(0)) -> None:
        self.spent = spent
        self.asked: list[str] = []

    async def __call__(self, limit: BudgetLimit, start: datetime) -> Decimal:
        self.asked.append(limit.id)
        return self.spent


def budget_step(rows: Sequence[BudgetRow], *, seeds: Seeds | None = None,
                default_output_tokens: int = 1000) -> Budget:
    step = Budget(MemoryLedger(seeds or Seeds()), keys_with(budgets=rows), CallPricer(PROVIDERS, PRICES),
                  default_output_tokens=default_output_tokens)
    return step


def test_budgets_for_finds_the_global_key_user_and_team_budgets_that_exist() -> None:
    step = budget_step([budget("global", 100, "total"), budget("key:k1", 1.5, "daily"),
                           budget("user:alice", 10), budget("team:research", 50), budget("key:other", 1)])
    assert [(b.id, b.max_usd, b.period) for b in step.budgets_for(KEY)] == [
        ("global", Decimal("100"), "total"), ("key:k1", Decimal("1.5"), "daily"),
        ("user:alice", Decimal("10"), "monthly"), ("team:research", Decimal("50"), "monthly"),
    ]
    assert [b.id for b in step.budgets_for(Principal(kind="master"))] == ["global"]
    only_team = budget_step([budget("team:research", 50)])
    assert [b.id for b in only_team.budgets_for(Principal(kind="jwt", user_id="bob", team_id="research"))] == [
        "team:research"]


async def test_without_budgets_the_ledger_is_never_asked() -> None:
    seeds = Seeds()
    step = budget_step([budget("key:other", 1)], seeds=seeds)
    assert step.budgets_for(KEY) == []

    async def handler(got: RequestContext) -> str:
        return "ok"

    assert await step.process(context(), handler) == "ok"
    assert seeds.asked == []
    empty = budget_step([])
    assert empty.budgets_for(KEY) == []


async def test_the_worst_case_is_reserved_during_the_call_and_settled_with_the_real_cost() -> None:
    step = budget_step([budget("key:k1", 5.0), budget("team:research", 50)])
    held: list[tuple[Decimal, Decimal]] = []
    limit = step.budgets_for(KEY)[0]

    async def handler(got: RequestContext) -> str:
        held.append(await step.ledger.status(limit))
        got.call.usage = Usage(input_tokens=100, output_tokens=20)
        return "ok"

    # 400 bytes: 101 input tokens ($0.101) + max_tokens 50 output tokens ($0.100).
    assert await step.process(context(body_bytes=400, max_output=50), handler) == "ok"
    assert held == [(Decimal(0), Decimal("0.201"))]
    assert await step.ledger.status(limit) == (Decimal("0.14"), Decimal(0))  # 100 * 0.001 + 20 * 0.002


async def test_without_max_tokens_the_configured_default_output_is_reserved() -> None:
    step = budget_step([budget("key:k1", 5.0)], default_output_tokens=1000)
    limit = step.budgets_for(KEY)[0]
    held: list[Decimal] = []

    async def handler(got: RequestContext) -> None:
        held.append((await step.ledger.status(limit))[1])

    await step.process(context(body_bytes=400), handler)
    assert held == [Decimal("2.101")]  # 101 input + 1000 output tokens
    assert await step.ledger.status(limit) == (Decimal(0), Decimal(0))  # no usage: nothing spent


async def test_an_unpriced_model_still_reserves_the_least_amount() -> None:
    step = budget_step([budget("key:k1", 5.0)])
    limit = step.budgets_for(KEY)[0]
    held: list[Decimal] = []

    async def handler(got: RequestContext) -> None:
        held.append((await step.ledger.status(limit))[1])

    await step.process(context(model="unpriced"), handler)
    assert held == [Decimal("1E-9")]


async def test_a_used_up_budget_refuses_before_the_provider_is_called() -> None:
    seeds = Seeds(spent=Decimal("4.95"))
    step = budget_step([budget("key:k1", 5.0)], seeds=seeds)
    reached = False

    async def handler(got: RequestContext) -> None:
        nonlocal reached
        reached = True

    with pytest.raises(BudgetExceededError) as caught:
        await step.process(context(body_bytes=400, max_output=50), handler)
    assert not reached and seeds.asked == ["key:k1"]
    assert caught.value.status == 429 and "key:k1" in caught.value.message


async def test_the_reservation_is_settled_when_the_handler_raises() -> None:
    step = budget_step([budget("key:k1", 5.0)])
    limit = step.budgets_for(KEY)[0]

    async def handler(got: RequestContext) -> None:
        got.call.usage = Usage(input_tokens=10, output_tokens=10)
        raise TimeoutError("upstream timed out")

    with pytest.raises(TimeoutError):
        await step.process(context(max_output=50), handler)
    assert await step.ledger.status(limit) == (Decimal("0.03"), Decimal(0))
