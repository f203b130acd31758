"""Virtual models: one name clients use, spread over several ``provider/model`` targets.

Why: a virtual model lets operators move and share traffic between providers without touching clients.
Each request gets an *order* of targets: the first is the one the strategy picks among the targets that
could take a request now (provider breaker not open, some key not resting); the others follow as the
request's implicit failover order, those that cannot take a request last (their breaker answers in
microseconds, so trying them costs nothing when every other target failed).

Strategies:
- ``weighted``: smooth weighted round robin (nginx's): over any ``sum(weights)`` requests each target gets
  exactly its share, interleaved rather than in runs; deterministic, so its shares are testable.
- ``weighted_random``: each request draws a target at random in proportion to the weights (no shared
  state: several gateway instances behind a load balancer need no coordination to keep the shares).
- ``round_robin``: the available targets in turn.
- ``least_in_flight``: the target with the fewest requests being answered now (ties: configuration order).
- ``lowest_latency``: the lowest EWMA of time to first byte (the provider's status line); a target with
  no sample yet is tried first, so every target gets measured.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from gomodel_proxy.config.schema import VirtualModelConfig

#: Weight of the newest sample in the latency EWMA.
EWMA_ALPHA = 0.3


class TargetStats:
    """What the balancer knows of one target: requests in flight and its time-to-first-byte EWMA."""

    __slots__ = ("current", "ewma_s", "in_flight", "model", "weight")

    def __init__(self, model: str, weight: float) -> None:
        self.model = model
        self.weight = weight
        self.in_flight = 0
        self.ewma_s: float | None = None
        #: Smooth weighted round robin's running credit.
        self.current = 0.0

    def observe_ttfb(self, seconds: float) -> None:
        ewma = self.ewma_s
        self.ewma_s = seconds if ewma is None else ewma + EWMA_ALPHA * (seconds - ewma)


class VirtualModel:
    def __init__(self, name: str, config: VirtualModelConfig, rng: random.Random | None = None) -> None:
        self.name = name
        self.strategy = config.strategy
        self.targets = [TargetStats(t.model, t.weight) for t in config.targets]
        self._rr = 0
        # Load spreading, not security: a plain PRNG is what is wanted (and seedable in tests).
        self._rng = rng or random.Random()  # noqa: S311

    def order(self, available: Callable[[str], bool]) -> list[TargetStats]:
        """The targets for one request, best first; ``available(model)`` says whether one can take it now."""
        up = [t for t in self.targets if available(t.model)]
        down = [t for t in self.targets if t not in up]
        if not up:
            return down
        first = self._pick(up)
        return [first, *(t for t in up if t is not first), *down]

    def _pick(self, up: list[TargetStats]) -> TargetStats:
        strategy = self.strategy
        if strategy == "round_robin":
            chosen = up[self._rr % len(up)]
            self._rr += 1
            return chosen
        if strategy == "weighted_random":
            return self._rng.choices(up, weights=[t.weight for t in up])[0]
        if strategy == "least_in_flight":
            return min(up, key=lambda t: t.in_flight)
        if strategy == "lowest_latency":
            unmeasured = [t for t in up if t.ewma_s is None]
            if unmeasured:
                return min(unmeasured, key=lambda t: t.in_flight)
            return min(up, key=lambda t: t.ewma_s or 0.0)
        total = 0.0
        best = up[0]
        for t in up:
            t.current += t.weight
            total += t.weight
            if t.current > best.current:
                best = t
        best.current -= total
        return best
