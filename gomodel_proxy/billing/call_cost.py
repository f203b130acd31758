"""The price of one call: its usage priced by the model that answered, through the provider's type."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from gomodel_proxy.billing.pricing import PriceTable
from gomodel_proxy.core.interfaces import Provider
from gomodel_proxy.core.types import CallRecord, Usage


class CallPricer:
    """Prices calls with one price table; a model without a price costs ``None`` (recorded as 0)."""

    def __init__(self, providers: Mapping[str, Provider], table: PriceTable) -> None:
        self.providers = providers
        self.table = table

    def cost(self, call: CallRecord, usage: Usage) -> Decimal | None:
        provider = self.providers.get(call.provider)
        if provider is None or not call.model:
            return None
        return self.table.cost_of(provider.kind, call.model, usage)

    def settle(self, call: CallRecord) -> Decimal | None:
        """``call.cost`` from its final usage, computed once (the budget and the usage record share it)."""
        if call.cost is None and call.usage is not None:
            call.cost = self.cost(call, call.usage)
        return call.cost
