"""A circuit breaker: closed (requests pass), open (they fail fast), half-open (a few probes decide).

One per provider and one per key. A failure is what says the provider itself is unwell: a connection
error, a timeout, a 5xx (529 included); a 4xx answer is the provider working as it should and counts as a
success. The breaker opens after ``failure_threshold`` failures in a row (no success between them) within
``window_s``: a steady trickle of failures among many successes never trips it. Open, it refuses every
request for ``cooldown_s``; then it lets ``half_open_requests`` probes through at once: a probe that
succeeds closes it, one that fails opens it for another cooldown.

Sans-I/O and clock-injected: the caller passes ``now`` (monotonic seconds). No timer, no task: the open ->
half-open step happens when a request looks at an open breaker whose cooldown is over.
"""

from __future__ import annotations

from collections.abc import Callable

from gomodel_proxy.config.schema import CircuitBreakerConfig

CLOSED = 0
HALF_OPEN = 1
OPEN = 2
STATE_NAMES = ("closed", "half_open", "open")

#: ``(breaker, old_state, new_state)``, called on every transition (logging).
TransitionHook = Callable[["CircuitBreaker", int, int], None]


class CircuitBreaker:
    __slots__ = (
        "cooldown_s", "enabled", "half_open_max", "key", "on_transition", "opened_at", "probes", "provider",
        "state", "streak", "streak_start", "threshold", "transitions", "window_s",
    )

    def __init__(
        self, config: CircuitBreakerConfig, *, provider: str = "", key: str = "",
        on_transition: TransitionHook | None = None,
    ) -> None:
        self.enabled = config.enabled
        self.threshold = config.failure_threshold
        self.window_s = config.window_s
        self.cooldown_s = config.cooldown_s
        self.half_open_max = config.half_open_requests
        #: Labels: the provider's name and the key's fingerprint ("" for the provider's own breaker).
        self.provider = provider
        self.key = key
        self.on_transition = on_transition
        #: ``CLOSED`` (0) is falsy: ``if breaker.state:`` is the hot path's only look at a closed breaker.
        self.state = CLOSED
        #: Failures in a row and when the first of them happened.
        self.streak = 0
        self.streak_start = 0.0
        self.opened_at = 0.0
        #: Probes in flight while half-open.
        self.probes = 0
        #: Transitions into each state, by the state's name.
        self.transitions: dict[str, int] = {"closed": 0, "half_open": 0, "open": 0}

    # -- may a request pass? ---------------------------------------------------------------------------
    def ready(self, now: float) -> bool:
        """Whether a request would pass now (no state change: for choosing among keys)."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            return now >= self.opened_at + self.cooldown_s and self.half_open_max > 0
        return self.probes < self.half_open_max

    def enter(self, now: float) -> bool:
        """Let a request pass (True) or refuse it (False); an open breaker past its cooldown turns half-open."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            if now < self.opened_at + self.cooldown_s:
                return False
            self.probes = 0
            self._to(HALF_OPEN)
        if self.probes >= self.half_open_max:
            return False
        self.probes += 1
        return True

    def remaining(self, now: float) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown_s - now)

    # -- what happened ---------------------------------------------------------------------------------
    def success(self) -> None:
        state = self.state
        if state == CLOSED:
            self.streak = 0
        elif state == HALF_OPEN:
            self.probes = 0
            self.streak = 0
            self._to(CLOSED)
        # OPEN: a request that left before the breaker opened; the cooldown runs its course.

    def failure(self, now: float) -> None:
        if not self.enabled:
            return
        state = self.state
        if state == HALF_OPEN:
            self.probes = 0
            self._open(now)
            return
        if state == OPEN:
            return
        if self.streak == 0 or now - self.streak_start > self.window_s:
            self.streak = 1
            self.streak_start = now
        else:
            self.streak += 1
        if self.streak >= self.threshold:
            self._open(now)

    def abandoned(self) -> None:
        """A request that passed ended with no verdict (cancelled, or refused before it went out)."""
        if self.state == HALF_OPEN and self.probes > 0:
            self.probes -= 1

    def _open(self, now: float) -> None:
        self.opened_at = now
        self.streak = 0
        self._to(OPEN)

    def _to(self, state: int) -> None:
        old = self.state
        self.state = state
        self.transitions[STATE_NAMES[state]] += 1
        hook = self.on_transition
        if hook is not None:
            hook(self, old, state)
