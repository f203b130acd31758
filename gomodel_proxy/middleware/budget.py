"""The chain's Budget step: spend caps of the key, its user, its team and the gateway.

Before the provider is called the request's worst case is reserved against every budget that applies
(prompt bytes / 4 input tokens plus ``max_tokens`` output, or ``budgets.default_output_tokens`` when
the client set none, priced for the model it goes to), all or none, atomically (in Redis when
configured), so concurrent requests cannot overshoot. When the answer ends (a stream, or a client
that left, too) the reservation is settled with the real cost without waiting for it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from gomodel_proxy.billing.call_cost import CallPricer
from gomodel_proxy.billing.ledger import BudgetLedger, BudgetLimit
from gomodel_proxy.billing.periods import Period
from gomodel_proxy.core.interfaces import Handler, RequestContext
from gomodel_proxy.core.types import Principal, Usage

if TYPE_CHECKING:
    from gomodel_proxy.middleware.key_cache import KeyCache
    from gomodel_proxy.storage.repository import BudgetRow


class Budget:
    def __init__(self, ledger: BudgetLedger, keys: KeyCache, pricer: CallPricer, *,
                 default_output_tokens: int) -> None:
        self.ledger = ledger
        self.keys = keys
        self.pricer = pricer
        self.default_output_tokens = default_output_tokens
        #: The ledger's view of each budget row, built once per row the key cache loaded.
        self._limits: dict[str, tuple[BudgetRow, BudgetLimit]] = {}

    def budgets_for(self, principal: Principal) -> list[BudgetLimit]:
        table = self.keys.budgets
        if not table:
            return []
        ids = ["global"]
        if principal.key_id:
            ids.append(f"key:{principal.key_id}")
        if principal.user_id:
            ids.append(f"user:{principal.user_id}")
        if principal.team_id:
            ids.append(f"team:{principal.team_id}")
        found: list[BudgetLimit] = []
        limits = self._limits
        for budget_id in ids:
            row = table.get(budget_id)
            if row is not None:
                cached = limits.get(budget_id)
                if cached is None or cached[0] is not row:  # new, or reloaded by the key cache
                    cached = limits[budget_id] = (row, BudgetLimit(row.id, Decimal(str(row.max_budget)),
                                                                   cast(Period, row.period)))
                found.append(cached[1])
        return found

    async def process(self, ctx: RequestContext, call_next: Handler) -> Any:
        budgets = self.budgets_for(ctx.call.principal)
        if not budgets:
            return await call_next(ctx)
        call = ctx.call
        worst = Usage(input_tokens=ctx.body_bytes // 4 + 1,
                      output_tokens=ctx.max_output_tokens or self.default_output_tokens)
        # Nano-USD integers on this path; a used-up budget refuses even an unpriced model (1 nano-USD).
        amount = max(self.pricer.cost_nano(call, worst) or 1, 1)
        reservation = await self.ledger.reserve_nano(budgets, amount)
        try:
            return await call_next(ctx)
        finally:
            self.ledger.settle_nowait_nano(reservation, self.pricer.settle_nano(call))
