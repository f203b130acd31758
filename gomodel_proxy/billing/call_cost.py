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

    def cost_nano(self, call: CallRecord, usage: Usage) -> int | None:
        """``cost`` in nano-USD, in integer arithmetic (the budget's hot path)."""
        provider = self.providers.get(call.provider)
        if provider is None or not call.model:
            return None
        return self.table.cost_nano_of(provider.kind, call.model, usage)

    def settle(self, call: CallRecord) -> Decimal | None:
        """``call.cost`` from its final usage, computed once (the budget and the usage record share it)."""
        if call.cost is None and call.usage is not None:
            self.settle_nano(call)
        return call.cost

    def settle_nano(self, call: CallRecord) -> int:
        """``settle`` in nano-USD (0 when unpriced or without usage), setting ``call.cost`` once."""
        if call.cost is not None:
            return int(call.cost.scaleb(9))
        if call.usage is None:
            return 0
        nano = self.cost_nano(call, call.usage)
        if nano is None:
            return 0
        call.cost = Decimal(nano).scaleb(-9)
        return nano
