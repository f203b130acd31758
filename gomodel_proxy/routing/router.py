"""From the model a client names to the ordered targets a request may be answered by.

Why a layer above ``ModelRegistry``: the registry knows which provider serves a model; the router adds
what operators configure on top: aliases and virtual models (``models:`` in the main configuration) and
failover chains (``failover.yaml``). With none of them configured ``active`` is False and the handlers
never call it: a plain request costs nothing more than before.

A plan is a list of ``Candidate``: the primary first, then its fallbacks in order, without duplicates.
- an alias is replaced by its target, whose own failover chain then applies;
- a virtual model gives its targets in the balancer's order (``routing.balancer``);
- otherwise the model's chain (``provider/model``) or else its provider's (``provider/*``, the wildcard
  keeping the model name) follows the primary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gomodel_proxy.config.schema import Config, FailoverTriggers, VirtualModelConfig
from gomodel_proxy.core.errors import ModelNotFoundError
from gomodel_proxy.core.interfaces import Provider
from gomodel_proxy.core.types import CallRecord, FailoverStep
from gomodel_proxy.observability.metrics import Metrics
from gomodel_proxy.routing.balancer import TargetStats, VirtualModel
from gomodel_proxy.routing.model_registry import ModelRegistry

#: ``owned_by`` of aliases and virtual models in ``/v1/models``.
OWNER = "gomodel-proxy"


@dataclass(slots=True)
class Candidate:
    """One target of a plan: the provider, the provider's own model id, and balancer stats if any."""

    provider: Provider
    model: str
    stats: TargetStats | None = None

    @property
    def qualified(self) -> str:
        return f"{self.provider.name}/{self.model}"


def provider_available(provider: Provider) -> bool:
    """Whether the provider would send a request now (no open breaker, some key not resting)."""
    client = getattr(provider, "llm_client", None)
    available = getattr(client, "available", None)
    return bool(available()) if callable(available) else True


class Router:
    def __init__(self, config: Config, registry: ModelRegistry, metrics: Metrics, logger: Any) -> None:
        self.registry = registry
        self._metrics = metrics
        self._log = logger
        self.aliases: dict[str, str] = {}
        self.virtual: dict[str, VirtualModel] = {}
        for name, entry in config.models.items():
            if isinstance(entry, VirtualModelConfig):
                self.virtual[name] = VirtualModel(name, entry)
            elif isinstance(entry, str):
                self.aliases[name] = entry
        failover = config.failover
        self.chains: dict[str, list[str]] = dict(failover.chains) if failover is not None else {}
        triggers = failover.triggers if failover is not None else FailoverTriggers()
        self.trigger_statuses = frozenset(triggers.status_codes)
        self.timeout_s = triggers.timeout_ms / 1000.0
        #: False: no alias, virtual model or chain; handlers then resolve through the registry alone.
        self.active = bool(self.aliases or self.virtual or self.chains)

    # -- planning ---------------------------------------------------------------------------------------
    def plan(self, model: str) -> list[Candidate]:
        virtual = self.virtual.get(model)
        if virtual is not None:
            order = virtual.order(self._available)
            out: list[Candidate] = []
            for t in order:
                try:
                    provider, upstream = self.registry.resolve(t.model)
                except ModelNotFoundError:  # its provider was skipped at start-up (no key)
                    continue
                out.append(Candidate(provider, upstream, t))
            if not out:
                raise ModelNotFoundError(
                    f"The virtual model '{model}' has no target whose provider is running; check its targets "
                    "and their providers' keys.", param="model",
                )
            return out
        target = self.aliases.get(model, model)
        provider, upstream = self.registry.resolve(target)
        plan = [Candidate(provider, upstream)]
        chain = self.chains.get(f"{provider.name}/{upstream}")
        wildcard = False
        if chain is None:
            chain = self.chains.get(f"{provider.name}/*")
            wildcard = True
        if chain:
            seen = {plan[0].qualified}
            for entry in chain:
                prefix, _, rest = entry.partition("/")
                fallback = f"{prefix}/{upstream}" if rest == "*" else entry
                if fallback in seen or (wildcard and rest != "*"):
                    continue
                try:
                    p, m = self.registry.resolve(fallback)
                except ModelNotFoundError:
                    continue
                seen.add(fallback)
                plan.append(Candidate(p, m))
        return plan

    def _available(self, model: str) -> bool:
        provider = self.registry.providers.get(model.partition("/")[0])
        return provider is None or provider_available(provider)

    # -- what happened ----------------------------------------------------------------------------------
    def failed_over(self, call: CallRecord, source: Candidate, target: Candidate, reason: str) -> None:
        """Log, count and record one move from ``source`` to ``target``."""
        call.failovers = (*call.failovers, FailoverStep(source.qualified, target.qualified, reason))
        self._metrics.failovers.labels(source.provider.name, target.provider.name, reason).inc()
        self._log.warning(
            "failover", request_id=call.request_id, from_model=source.qualified, to_model=target.qualified,
            reason=reason,
        )

    # -- /v1/models -------------------------------------------------------------------------------------
    def listed(self) -> list[dict[str, Any]]:
        names = [*self.aliases, *self.virtual]
        return [{"id": n, "object": "model", "created": 0, "owned_by": OWNER} for n in names]
