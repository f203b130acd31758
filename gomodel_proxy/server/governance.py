"""Assembles governance from the configuration: storage, authentication, the chain, the usage writer.

What is built depends on what is configured, so a gateway without it pays nothing:
- a database (SQLite by default, ``database.url`` otherwise) when usage is tracked or a master key lets
  the admin API hand out keys;
- the key cache (virtual keys, users, teams, budgets) when there is a master key;
- the chain (``features.middleware``): ModelAccess when keys exist, RateLimit when a limit can apply,
  Budget when keys exist and ``features.budgets``; Guardrails and Cache take their places later;
- counters in Redis when ``redis.url`` is set (exact across instances), else in this process.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gomodel_proxy.billing.call_cost import CallPricer
from gomodel_proxy.billing.export import spend_since
from gomodel_proxy.billing.ledger import BudgetLedger, BudgetLimit, MemoryLedger, RedisLedger, Seed
from gomodel_proxy.billing.pricing import PriceTable, install
from gomodel_proxy.billing.usage import new_call_id, usage_row
from gomodel_proxy.billing.usage_writer import UsageWriter
from gomodel_proxy.config.schema import Config
from gomodel_proxy.core.errors import ServiceUnavailableError
from gomodel_proxy.core.interfaces import Middleware, Provider
from gomodel_proxy.core.types import CallRecord
from gomodel_proxy.limits.redis_guard import RedisGuard
from gomodel_proxy.limits.redis_limiter import RedisRateLimiter
from gomodel_proxy.limits.token_bucket import MemoryRateLimiter, RateLimiter
from gomodel_proxy.middleware.auth import Authenticator, ModelAccess
from gomodel_proxy.middleware.budget import Budget
from gomodel_proxy.middleware.chain import Chain
from gomodel_proxy.middleware.key_cache import KeyCache
from gomodel_proxy.middleware.ratelimit import RateLimit
from gomodel_proxy.storage.database import Database
from gomodel_proxy.storage.tables import utcnow

if TYPE_CHECKING:
    from gomodel_proxy.middleware.jwt_verifier import JWTVerifier


@dataclass(slots=True)
class Governance:
    config: Config
    pricer: CallPricer
    logger: Any
    db: Database | None = None
    keys: KeyCache | None = None
    authenticator: Authenticator | None = None
    jwt: JWTVerifier | None = None
    guard: RedisGuard | None = None
    limiter: RateLimiter | None = None
    ledger: BudgetLedger | None = None
    writer: UsageWriter | None = None
    chain: Chain = field(default_factory=lambda: Chain(()))

    # -- life cycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.db is not None:
            await self.db.connect()  # creates or migrates the schema
        if self.keys is not None:
            await self.keys.start()
        if self.jwt is not None:
            await self.jwt.start()
        if self.writer is not None:
            await self.writer.start()

    async def close(self) -> None:
        """Drain: every usage record reaches the database or the spool file; the guard (closed last)
        sends the settlements still queued for Redis."""
        if self.writer is not None:
            await self.writer.close()
        for part in (self.keys, self.jwt, self.limiter, self.ledger, self.guard):  # the guard last
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.close()
        if self.db is not None:
            await self.db.close()

    # -- per request ------------------------------------------------------------------------------
    def record_usage(self, call: CallRecord) -> None:
        """The usage record of a finished API call (called once per request, by the recorder)."""
        writer = self.writer
        if writer is None or not call.billable:
            return
        self.pricer.settle(call)
        writer.submit(usage_row(call, new_call_id(), utcnow()))

    async def on_admin_change(self, what: str) -> None:
        """The admin API changed keys, users, teams or a budget: refresh at once on this instance."""
        if self.keys is not None:
            await self.keys.refresh()
        if what.startswith("budgets:") and self.ledger is not None:
            await self.ledger.forget(what.partition(":")[2])


def build_governance(config: Config, providers: dict[str, Provider], logger: Any) -> Governance:
    table = PriceTable.from_config(config.pricing)
    install(table)
    gov = Governance(config=config, pricer=CallPricer(providers, table), logger=logger)
    features = config.features
    master = config.server.master_key
    if features.usage_tracking or master:
        gov.db = Database.from_config(config)
    if master and gov.db is not None:
        gov.keys = KeyCache(gov.db, refresh_s=config.auth.refresh_s, logger=logger)
    if config.auth.jwt is not None:
        from gomodel_proxy.middleware.jwt_verifier import JWTVerifier  # noqa: PLC0415 - PyJWT only when used

        gov.jwt = JWTVerifier(config.auth.jwt, logger=logger)
    if master or gov.jwt is not None:
        gov.authenticator = Authenticator(master, gov.keys, gov.jwt)
    if config.redis.url:
        gov.guard = RedisGuard(config.redis, logger)
    steps: list[Middleware] = []
    if features.middleware:
        if gov.keys is not None:
            steps.append(ModelAccess())
        limits = config.rate_limits
        configured = any((limits.default_key.rpm, limits.default_key.tpm, limits.global_.rpm, limits.global_.tpm))
        if features.rate_limiting and (gov.keys is not None or gov.jwt is not None or configured):
            gov.limiter = RedisRateLimiter(gov.guard) if gov.guard is not None else MemoryRateLimiter()
            steps.append(RateLimit(gov.limiter, limits, gov.keys))
        if features.budgets and gov.keys is not None and gov.db is not None:
            seed = _seed(gov.db)
            gov.ledger = RedisLedger(gov.guard, seed) if gov.guard is not None else MemoryLedger(seed)
            steps.append(Budget(gov.ledger, gov.keys, gov.pricer,
                                default_output_tokens=config.budgets.default_output_tokens))
    gov.chain = Chain(steps)
    if features.usage_tracking and gov.db is not None:
        spool = Path(config.usage.spool_dir or config.cache.dir)
        gov.writer = UsageWriter(gov.db, spool, batch_size=config.usage.batch_size,
                                 flush_interval_s=config.usage.flush_interval_ms / 1000, logger=logger)
    return gov


def _seed(db: Database) -> Seed:
    """A budget's spend so far this period, from the usage records (first use, restart, Redis flushed)."""

    async def seed(budget: BudgetLimit, start: datetime) -> Decimal:
        scope, _, subject = budget.id.partition(":")
        try:
            return await spend_since(db, scope=scope, subject_id=subject, start=start)
        except Exception as exc:
            raise ServiceUnavailableError(
                f"The gateway cannot read budget {budget.id}'s spend right now (its database is unreachable); "
                "retry shortly.", code="budget_unavailable", headers={"Retry-After": "1"},
            ) from exc

    return seed
