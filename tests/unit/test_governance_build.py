"""``build_governance``: which parts exist for which configuration; ``Governance``'s life cycle and its
per-request hooks; the governance collector of ``/metrics``."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gomodel_proxy.billing import pricing
from gomodel_proxy.billing.ledger import BudgetLimit, MemoryLedger, RedisLedger
from gomodel_proxy.billing.usage import usage_row
from gomodel_proxy.billing.usage_writer import UsageWriter
from gomodel_proxy.config.schema import (
    AuthConfig,
    CacheConfig,
    Config,
    DatabaseConfig,
    FeaturesConfig,
    JWTConfig,
    ModelPriceConfig,
    PricingConfig,
    RateLimitPair,
    RateLimitsConfig,
    RedisConfig,
    ServerConfig,
    UsageConfig,
)
from gomodel_proxy.core.errors import ServiceUnavailableError
from gomodel_proxy.core.types import CallRecord, Principal, Usage
from gomodel_proxy.limits.redis_guard import RedisGuard
from gomodel_proxy.limits.redis_limiter import RedisRateLimiter
from gomodel_proxy.limits.token_bucket import MemoryRateLimiter
from gomodel_proxy.middleware.auth import Authenticator
from gomodel_proxy.middleware.key_cache import KeyCache
from gomodel_proxy.observability.governance_metrics import GovernanceCollector
from gomodel_proxy.server.governance import Governance, _seed, build_governance
from gomodel_proxy.storage import repository
from gomodel_proxy.storage.database import Database
from gomodel_proxy.storage.tables import usage_records, utcnow
from tests.support.governed import usage_rows

MASTER_KEY = "sk-master-build-0123456789"
PROVIDERS: dict[str, Any] = {"mock": SimpleNamespace(kind="mock", name="mock")}


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def log(event: str, **fields: Any) -> None:
            self.lines.append((level, event, fields))
        return log


@pytest.fixture(autouse=True)
def _shipped_prices_afterwards() -> Iterator[None]:
    """build_governance installs its price table process-wide; put the shipped one back."""
    yield
    pricing.install(None)


def config(tmp_path: Path, *, master: str | None = None, features: dict[str, bool] | None = None,
           jwt: JWTConfig | None = None, redis_url: str = "", limits: RateLimitsConfig | None = None,
           spool_dir: str = "", db_url: str = "", schema: str = "") -> Config:
    return Config(
        server=ServerConfig(master_key=master),
        features=FeaturesConfig(**(features or {})),
        cache=CacheConfig(dir=str(tmp_path / "cache")),
        database=DatabaseConfig(url=db_url, schema=schema),
        redis=RedisConfig(url=redis_url, key_prefix="gmtest:build:"),
        auth=AuthConfig(jwt=jwt, refresh_s=60),
        rate_limits=limits or RateLimitsConfig(),
        usage=UsageConfig(flush_interval_ms=10, spool_dir=spool_dir),
        pricing=PricingConfig(models={"mock/m": ModelPriceConfig(input=1000.0, output=2000.0)}),
    )


def jwt_config() -> JWTConfig:
    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return JWTConfig(issuer="https://idp.example/", public_key=pem, algorithms=["ES256"])


# -- what is built ----------------------------------------------------------------------------------
def test_no_master_key_and_no_usage_tracking_builds_nothing(tmp_path: Path) -> None:
    gov = build_governance(config(tmp_path, features={"usage_tracking": False}), PROVIDERS, Log())
    assert gov.db is None and gov.keys is None and gov.authenticator is None and gov.jwt is None
    assert gov.writer is None and gov.limiter is None and gov.ledger is None and gov.guard is None
    assert not gov.chain and gov.chain.names() == []
    assert pricing.price_table() is gov.pricer.table  # the configured prices are the process's


async def test_usage_tracking_alone_opens_the_embedded_store_after_start_up(tmp_path: Path) -> None:
    gov = build_governance(config(tmp_path), PROVIDERS, Log())
    assert gov.usage_later and gov.db is None and gov.writer is None  # nothing opened before serving
    assert gov.keys is None and gov.authenticator is None and not gov.chain
    early = CallRecord(request_id="early", endpoint="chat", provider="mock", model="m", billable=True,
                       usage=Usage(input_tokens=10, output_tokens=10))
    await gov.start()
    gov.record_usage(early)  # made while the store is still opening: kept, then written
    assert gov._opening is not None
    await gov._opening
    assert gov.db is not None and gov.db.backend == "sqlite" and str(tmp_path / "cache") in str(gov.db.url)
    assert isinstance(gov.writer, UsageWriter) and gov.writer.spool_dir == tmp_path / "cache"
    db = gov.db
    await gov.close()
    await db.connect(migrate=False)
    try:
        (row,) = await usage_rows(db)
    finally:
        await db.close()
    assert row["request_id"] == "early" and row["cost"] == pytest.approx(0.03)


async def test_an_embedded_store_that_cannot_open_spools_the_records(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    spool = tmp_path / "spool"
    log = Log()
    gov = build_governance(config(tmp_path, spool_dir=str(spool)), PROVIDERS, log)
    await gov.start()
    assert gov._opening is not None
    await gov._opening
    gov.record_usage(CallRecord(request_id="kept", endpoint="chat", provider="mock", model="m", billable=True,
                                usage=Usage(input_tokens=1, output_tokens=1)))
    await gov.close()
    assert any(event == "usage store cannot be opened; records go to the spool file" for _, event, _ in log.lines)
    assert "kept" in "".join(p.read_text() for p in spool.glob("usage-spool-*.jsonl"))


def test_a_configured_database_is_built_before_serving(tmp_path: Path) -> None:
    gov = build_governance(config(tmp_path, db_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"), PROVIDERS, Log())
    assert not gov.usage_later and gov.db is not None and isinstance(gov.writer, UsageWriter)


def test_a_configured_limit_without_keys_builds_a_rate_limit_step(tmp_path: Path) -> None:
    limits = RateLimitsConfig(global_=RateLimitPair(rpm=100))
    gov = build_governance(config(tmp_path, features={"usage_tracking": False}, limits=limits), PROVIDERS, Log())
    assert gov.chain.names() == ["RateLimit"] and isinstance(gov.limiter, MemoryRateLimiter)
    assert gov.chain.middlewares[0].limiter is gov.limiter  # type: ignore[attr-defined]


def test_a_master_key_builds_keys_model_access_rate_limit_and_budget(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    gov = build_governance(config(tmp_path, master=MASTER_KEY, spool_dir=str(spool)), PROVIDERS, Log())
    assert gov.db is not None and isinstance(gov.keys, KeyCache) and gov.keys.db is gov.db
    assert isinstance(gov.authenticator, Authenticator) and gov.authenticator.keys is gov.keys
    assert gov.authenticator.jwt is None
    assert gov.chain.names() == ["ModelAccess", "RateLimit", "Budget"]
    assert isinstance(gov.limiter, MemoryRateLimiter) and isinstance(gov.ledger, MemoryLedger)
    assert gov.writer is not None and gov.writer.spool_dir == spool


def test_a_master_key_without_usage_tracking_still_has_a_database_for_the_keys(tmp_path: Path) -> None:
    gov = build_governance(config(tmp_path, master=MASTER_KEY, features={"usage_tracking": False}),
                           PROVIDERS, Log())
    assert gov.db is not None and gov.keys is not None and gov.writer is None
    assert gov.chain.names() == ["ModelAccess", "RateLimit", "Budget"]


def test_jwt_only_builds_the_verifier_and_a_rate_limit_step(tmp_path: Path) -> None:
    gov = build_governance(config(tmp_path, jwt=jwt_config(), features={"usage_tracking": False}),
                           PROVIDERS, Log())
    assert gov.jwt is not None and gov.keys is None and gov.db is None
    assert gov.authenticator is not None and gov.authenticator.jwt is gov.jwt and gov.authenticator.keys is None
    assert gov.chain.names() == ["RateLimit"] and gov.ledger is None  # budgets need keys


async def test_a_redis_url_puts_counters_in_redis(tmp_path: Path) -> None:
    gov = build_governance(config(tmp_path, master=MASTER_KEY, redis_url="redis://127.0.0.1:1/0"),
                           PROVIDERS, Log())
    try:
        assert isinstance(gov.guard, RedisGuard) and gov.guard.prefix == "gmtest:build:"
        assert isinstance(gov.limiter, RedisRateLimiter) and isinstance(gov.ledger, RedisLedger)
        assert gov.chain.names() == ["ModelAccess", "RateLimit", "Budget"]
    finally:
        await gov.guard.close()  # type: ignore[union-attr]


@pytest.mark.parametrize(("features", "names"), [
    ({"middleware": False}, []),
    ({"rate_limiting": False}, ["ModelAccess", "Budget"]),
    ({"budgets": False}, ["ModelAccess", "RateLimit"]),
    ({"rate_limiting": False, "budgets": False}, ["ModelAccess"]),
])
def test_features_switch_steps_off(tmp_path: Path, features: dict[str, bool], names: list[str]) -> None:
    gov = build_governance(config(tmp_path, master=MASTER_KEY, features=features), PROVIDERS, Log())
    assert gov.chain.names() == names
    assert gov.keys is not None and gov.authenticator is not None  # authentication is not a chain step
    assert (gov.limiter is not None) == ("RateLimit" in names)
    assert (gov.ledger is not None) == ("Budget" in names)


# -- life cycle -------------------------------------------------------------------------------------
def _db_url(db: Database) -> str:
    return db.url.render_as_string(hide_password=False)


async def test_start_loads_keys_and_jwt_and_close_drains_everything(tmp_path: Path, db: Database) -> None:
    _, key = await repository.create_key(db, name="preexisting")
    cfg = config(tmp_path, master=MASTER_KEY, jwt=jwt_config(), db_url=_db_url(db), schema=db.schema or "")
    gov = build_governance(cfg, PROVIDERS, Log())
    await gov.start()
    assert gov.keys is not None and gov.keys.loaded and gov.keys.lookup(key) is not None
    assert gov.writer is not None and gov.writer._task is not None  # type: ignore[attr-defined]
    call = CallRecord(request_id="r1", endpoint="chat", provider="mock", model="m", billable=True,
                      usage=Usage(input_tokens=10, output_tokens=10))
    gov.record_usage(call)
    await gov.close()
    assert gov.db is not None and gov.db._engine is None  # type: ignore[attr-defined]
    assert gov.keys._task is None
    rows = await repository.keys_changed_since(db, None)
    assert len(rows) == 1
    (row,) = await usage_rows(db)
    assert row["cost"] == pytest.approx(0.03) and row["provider"] == "mock"


async def test_start_and_close_without_any_part_do_nothing(tmp_path: Path) -> None:
    gov = build_governance(config(tmp_path, features={"usage_tracking": False}), PROVIDERS, Log())
    await gov.start()
    await gov.close()
    assert not (tmp_path / "cache").exists()  # no database file was made


async def test_close_goes_on_when_a_part_fails_to_close(tmp_path: Path) -> None:
    closed: list[str] = []

    class Part:
        def __init__(self, name: str, fail: bool) -> None:
            self.name, self.fail = name, fail

        async def close(self) -> None:
            closed.append(self.name)
            if self.fail:
                raise RuntimeError("boom")

    gov = Governance(config=config(tmp_path), pricer=None, logger=Log(),  # type: ignore[arg-type]
                     limiter=Part("limiter", True), ledger=Part("ledger", False),  # type: ignore[arg-type]
                     guard=Part("guard", True))  # type: ignore[arg-type]
    await gov.close()
    assert closed == ["limiter", "ledger", "guard"]


async def test_an_admin_change_refreshes_keys_and_forgets_a_changed_budget(tmp_path: Path) -> None:
    refreshed: list[bool] = []
    forgotten: list[str] = []

    async def refresh() -> None:
        refreshed.append(True)

    async def forget(budget_id: str) -> None:
        forgotten.append(budget_id)

    gov = Governance(config=config(tmp_path), pricer=None, logger=Log())  # type: ignore[arg-type]
    await gov.on_admin_change("budgets:key:k1")  # neither part: nothing to do, nothing fails
    gov.keys = SimpleNamespace(refresh=refresh)  # type: ignore[assignment]
    await gov.on_admin_change("keys")
    assert refreshed == [True] and forgotten == []
    gov.ledger = SimpleNamespace(forget=forget)  # type: ignore[assignment]
    await gov.on_admin_change("budgets:team:research")
    await gov.on_admin_change("users")
    assert refreshed == [True] * 3 and forgotten == ["team:research"]


# -- budget seeds -----------------------------------------------------------------------------------
async def test_a_budget_is_seeded_from_the_usage_records(db: Database) -> None:
    call = CallRecord(request_id="r1", endpoint="chat", provider="mock", model="m", status=200,
                      usage=Usage(input_tokens=1, output_tokens=1), cost=Decimal("0.25"),
                      principal=Principal(kind="key", key_id="k1"))
    async with db.begin() as conn:
        await conn.execute(usage_records.insert().values(**usage_row(call, "c1", utcnow())))
    seed = _seed(db)
    start = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    assert await seed(BudgetLimit("key:k1", Decimal(1), "daily"), start) == Decimal("0.25")
    assert await seed(BudgetLimit("key:k2", Decimal(1), "daily"), start) == Decimal(0)
    assert await seed(BudgetLimit("global", Decimal(1), "daily"), start) == Decimal("0.25")


async def test_an_unreadable_budget_seed_is_a_503_to_retry(db: Database) -> None:
    seed = _seed(db)
    await db.close()
    with pytest.raises(ServiceUnavailableError) as caught:
        await seed(BudgetLimit("key:k1", Decimal(1), "daily"), utcnow())
    assert caught.value.code == "budget_unavailable" and caught.value.headers == {"Retry-After": "1"}
    assert "key:k1" in caught.value.message


# -- /metrics ---------------------------------------------------------------------------------------
def _samples(collector: GovernanceCollector) -> dict[str, float]:
    return {s.name + ("{" + s.labels["state"] + "}" if s.labels else ""): s.value
            for metric in collector.collect() for s in metric.samples}


def test_the_collector_reports_nothing_for_a_gateway_without_governance() -> None:
    assert _samples(GovernanceCollector(SimpleNamespace(writer=None, guard=None, keys=None))) == {}


def test_the_collector_reads_the_writer_the_guard_and_the_keys() -> None:
    writer = SimpleNamespace(written=5, spooled=2, replayed=1, rejected=0, pending=3, state="spooling")
    guard = SimpleNamespace(degraded=4, available=False)
    keys = SimpleNamespace(live_count=7)
    samples = _samples(GovernanceCollector(SimpleNamespace(writer=writer, guard=guard, keys=keys)))
    assert samples == {
        "gomodel_usage_records_total{written}": 5.0, "gomodel_usage_records_total{spooled}": 2.0,
        "gomodel_usage_records_total{replayed}": 1.0, "gomodel_usage_records_total{rejected}": 0.0,
        "gomodel_usage_pending": 3.0, "gomodel_usage_spooling": 1.0,
        "gomodel_limiter_degraded_total": 4.0, "gomodel_limiter_redis_up": 0.0, "gomodel_virtual_keys": 7.0,
    }
    writer.state, guard.available = "writing", True
    samples = _samples(GovernanceCollector(SimpleNamespace(writer=writer, guard=guard, keys=None)))
    assert samples["gomodel_usage_spooling"] == 0.0 and samples["gomodel_limiter_redis_up"] == 1.0
    assert "gomodel_virtual_keys" not in samples


async def test_records_that_never_reach_a_store_are_reported_not_dropped_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = Log()
    gov = build_governance(config(tmp_path), PROVIDERS, log)

    async def broken(self: Governance) -> None:
        raise RuntimeError("cannot import the storage layer")

    monkeypatch.setattr(Governance, "_open_usage_store", broken)
    await gov.start()
    gov.record_usage(CallRecord(request_id="r", endpoint="chat", provider="mock", model="m", billable=True,
                                usage=Usage(input_tokens=1, output_tokens=1)))
    await gov.close()
    errors = [(event, fields) for level, event, fields in log.lines if level == "error"]
    assert ("usage store never opened", {"error": "RuntimeError: cannot import the storage layer"}) in errors
    assert ("usage records lost: the usage store never opened", {"records": 1}) in errors
