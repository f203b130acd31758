"""Assembles governance from the configuration: storage, authentication, the chain, the usage writer.

What is built depends on what is configured, so a gateway without it pays nothing:
- a database (SQLite by default, ``database.url`` otherwise) when usage is tracked or a master key lets
  the admin API hand out keys;
- the key cache (virtual keys, users, teams, budgets) when there is a master key;
- the chain (``features.middleware``): ModelAccess when keys exist, RateLimit when a limit can apply,
  Budget when keys exist and ``features.budgets``, Guardrails when ``guardrails.yaml`` has some (and
  ``features.guardrails``), Cache when ``cache.responses.enabled``;
- counters in Redis when ``redis.url`` is set (exact across instances), else in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gomodel_proxy.audit.build import build_audit
from gomodel_proxy.audit.pipeline import AuditLogger, NoopAuditLogger
from gomodel_proxy.billing.call_cost import CallPricer
from gomodel_proxy.billing.ledger import BudgetLedger, BudgetLimit, MemoryLedger, RedisLedger, Seed
from gomodel_proxy.billing.periods import utcnow
from gomodel_proxy.billing.pricing import PriceTable, install
from gomodel_proxy.billing.usage import new_call_id, usage_record
from gomodel_proxy.config.schema import Config
from gomodel_proxy.core.errors import ServiceUnavailableError
from gomodel_proxy.core.interfaces import Middleware, Provider
from gomodel_proxy.core.types import CallRecord, Principal
from gomodel_proxy.limits.redis_guard import RedisGuard
from gomodel_proxy.limits.redis_limiter import RedisRateLimiter
from gomodel_proxy.limits.token_bucket import MemoryRateLimiter, RateLimiter
from gomodel_proxy.middleware.auth import Authenticator, ModelAccess
from gomodel_proxy.middleware.budget import Budget
from gomodel_proxy.middleware.chain import Chain
from gomodel_proxy.middleware.ratelimit import RateLimit
from gomodel_proxy.observability.metrics import Metrics

if TYPE_CHECKING:  # storage, PyJWT, guardrails, cache: imported where built, only when configured
    from gomodel_proxy.billing.usage_writer import UsageWriter
    from gomodel_proxy.cache.store import AnswerStore
    from gomodel_proxy.guardrails.guardrail_set import GuardrailSet
    from gomodel_proxy.middleware.cache import ResponseCache
    from gomodel_proxy.middleware.jwt_verifier import JWTVerifier
    from gomodel_proxy.middleware.key_cache import KeyCache
    from gomodel_proxy.storage.database import Database


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
    #: The audit trail (``audit.pipeline``): a request's entries are queued by the recorder's hook.
    audit: AuditLogger | NoopAuditLogger = field(default_factory=NoopAuditLogger)
    guardrails: GuardrailSet | None = None
    cache: ResponseCache | None = None
    chain: Chain = field(default_factory=lambda: Chain(()))
    #: The embedded usage store is opened after start-up (see ``build_governance``); records made
    #: meanwhile wait in ``_early``.
    usage_later: bool = False
    _early: list[tuple[Any, ...]] = field(default_factory=list)
    _opening: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.usage_later:
            self._opening = asyncio.get_running_loop().create_task(self._open_usage_store())
        if self.db is not None:
            await self.db.connect()  # creates or migrates the schema
        if self.keys is not None:
            await self.keys.start()
        if self.jwt is not None:
            await self.jwt.start()
        if self.writer is not None:
            await self.writer.start()
        await self.audit.start()
        if self.cache is not None:
            await self.cache.start()

    async def close(self) -> None:
        """Drain: every usage record reaches the database or the spool file; the guard (closed last)
        sends the settlements still queued for Redis."""
        if self._opening is not None:
            try:
                await asyncio.wait_for(self._opening, 30)
            except Exception as exc:
                self.logger.error("usage store never opened", error=f"{type(exc).__name__}: {exc}"[:300])
        if self._early:  # only when the store never opened: say what could not be kept
            self.logger.error("usage records lost: the usage store never opened", records=len(self._early))
        if self.writer is not None:
            await self.writer.close()
        if self.cache is not None:
            await self.cache.close()
        await self.audit.close()
        for part in (self.keys, self.jwt, self.limiter, self.ledger, self.guard):  # the guard last
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.close()
        if self.db is not None:
            await self.db.close()

    # -- per request ------------------------------------------------------------------------------
    def record_usage(self, call: CallRecord) -> None:
        """The usage record of a finished API call (called once per request, by the recorder)."""
        if not call.billable:
            return
        writer = self.writer
        if writer is None and not self.usage_later:
            return
        self.pricer.settle(call)
        row = usage_record(call, new_call_id(), utcnow())
        if writer is None:
            self._early.append(row)  # the store is still opening
        else:
            writer.submit(row)

    async def _open_usage_store(self) -> None:
        """Open the embedded store behind a ready gateway: SQLAlchemy alone takes longer to import than the
        rest of start-up. A store that cannot be opened still gets a writer: it spools, nothing is lost."""
        await asyncio.to_thread(importlib.import_module, "gomodel_proxy.billing.usage_writer")
        from gomodel_proxy.storage.database import Database  # noqa: PLC0415 - imported above, off the loop

        config = self.config
        db = Database.from_config(config)
        try:
            await db.connect()
        except Exception as exc:
            self.logger.error("usage store cannot be opened; records go to the spool file",
                              error=f"{type(exc).__name__}: {exc}"[:300])
        writer = _usage_writer(config, db, self.logger)
        await writer.start()
        self.db, self.writer = db, writer
        early, self._early = self._early, []
        for row in early:
            writer.submit(row)

    async def on_admin_change(self, what: str) -> None:
        """The admin API changed keys, users, teams or a budget: refresh at once on this instance."""
        if self.keys is not None:
            await self.keys.refresh()
        if what.startswith("budgets:") and self.ledger is not None:
            await self.ledger.forget(what.partition(":")[2])


def build_governance(config: Config, providers: dict[str, Provider], logger: Any,
                     metrics: Metrics | None = None) -> Governance:
    table = PriceTable.from_config(config.pricing)
    install(table)
    gov = Governance(config=config, pricer=CallPricer(providers, table), logger=logger)
    features = config.features
    master = config.server.master_key
    # Zero-configuration (usage records in the embedded SQLite file, no keys to load before serving):
    # the store opens after start-up. Keys, or a configured database, are opened before serving, so a
    # gateway that cannot read them does not start.
    gov.usage_later = features.usage_tracking and not master and not config.database.url
    if master or (features.usage_tracking and not gov.usage_later):
        from gomodel_proxy.storage.database import Database  # noqa: PLC0415 - only when used

        gov.db = Database.from_config(config)
    if master and gov.db is not None:
        from gomodel_proxy.middleware.key_cache import KeyCache  # noqa: PLC0415

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
    metrics = metrics if metrics is not None else Metrics()
    gov.audit = build_audit(config, logger, settle=gov.pricer.settle)
    if features.middleware and features.guardrails and config.guardrails.specs:
        gov.guardrails = _guardrails(config, providers, gov.keys, logger)
        if gov.guardrails:
            from gomodel_proxy.middleware.guardrails import Guardrails  # noqa: PLC0415 - only when on

            steps.append(Guardrails(gov.guardrails, metrics=metrics, audit=gov.audit, logger=logger))
    if features.middleware and config.cache.responses.enabled:
        gov.cache = _response_cache(config, providers, gov, metrics, logger)
        steps.append(gov.cache)
    gov.chain = Chain(steps)
    if features.usage_tracking and gov.db is not None:
        gov.writer = _usage_writer(config, gov.db, logger)
    return gov


def _guardrails(config: Config, providers: dict[str, Provider], keys: KeyCache | None, logger: Any) -> GuardrailSet:
    from gomodel_proxy.guardrails.guardrail_set import GuardrailSet, build_guardrail  # noqa: PLC0415

    hold_back = config.guardrails.hold_back_chars
    entries = [(spec, build_guardrail(spec, providers=providers, hold_back=hold_back, logger=logger))
               for spec in config.guardrails.specs if spec.enabled]

    def names(principal: Principal) -> tuple[str | None, str | None]:
        if keys is None:
            return None, None
        key = keys.keys_by_id.get(principal.key_id or "")
        team = keys.teams.get(principal.team_id or "")
        return (key.name if key is not None else None), (team.name if team is not None else None)

    return GuardrailSet(entries, names=names)


def _response_cache(config: Config, providers: dict[str, Provider], gov: Governance, metrics: Metrics,
                    logger: Any) -> ResponseCache:
    from gomodel_proxy.cache.store import LocalAnswerStore, RedisAnswerStore  # noqa: PLC0415
    from gomodel_proxy.middleware.cache import ResponseCache  # noqa: PLC0415 - only when on

    settings = config.cache.responses
    store: AnswerStore
    if config.cache.backend == "redis":
        store = RedisAnswerStore(config.redis.url, prefix=f"{config.redis.key_prefix}cache:",
                                 timeout_s=config.redis.timeout_ms / 1000,
                                 max_entry_bytes=int(settings.max_entry_kb * 1024))
    else:
        snapshot = Path(config.cache.dir) / "responses.cache" if settings.persist else None
        store = LocalAnswerStore(int(settings.max_mb * 1024 * 1024), snapshot=snapshot)
    semantic = None
    if settings.semantic.enabled:
        from gomodel_proxy.cache.semantic_lookup import SemanticLookup  # noqa: PLC0415

        semantic = SemanticLookup(store, providers[settings.semantic.provider], settings, logger=logger)
    return ResponseCache(store, settings, metrics=metrics, logger=logger, keys=gov.keys, semantic=semantic)


def _usage_writer(config: Config, db: Database, logger: Any) -> UsageWriter:
    from gomodel_proxy.billing.usage_writer import UsageWriter  # noqa: PLC0415

    return UsageWriter(db, Path(config.usage.spool_dir or config.cache.dir), batch_size=config.usage.batch_size,
                       flush_interval_s=config.usage.flush_interval_ms / 1000, logger=logger)


def _seed(db: Database) -> Seed:
    """A budget's spend so far this period, from the usage records (first use, restart, Redis flushed)."""

    async def seed(budget: BudgetLimit, start: datetime) -> Decimal:
        from gomodel_proxy.storage.raw import spend_since  # noqa: PLC0415 - with the database (raw driver)

        scope, _, subject = budget.id.partition(":")
        try:
            return await spend_since(db, scope=scope, subject_id=subject, start=start)
        except Exception as exc:
            raise ServiceUnavailableError(
                f"The gateway cannot read budget {budget.id}'s spend right now (its database is unreachable); "
                "retry shortly.", code="budget_unavailable", headers={"Retry-After": "1"},
            ) from exc

    return seed
