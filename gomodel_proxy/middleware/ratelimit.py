"""The chain's RateLimit step: RPM and TPM of the key, its user, its team and the whole gateway.

One limiter call admits or refuses the request against every limit that applies (all or nothing);
when nothing applies, the limiter is not called at all. The tokens taken at admission are the
request's estimate (prompt bytes / 4 plus its ``max_tokens``); when the answer ends (a stream too)
the difference to the real usage is charged without waiting (in memory at once; in Redis with the next
pipeline), never delaying the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gomodel_proxy.config.schema import RateLimitsConfig
from gomodel_proxy.core.interfaces import Handler, RequestContext
from gomodel_proxy.core.types import Principal
from gomodel_proxy.limits.token_bucket import Limit, RateLimiter, rate_limit_error

if TYPE_CHECKING:
    from gomodel_proxy.middleware.key_cache import KeyCache


def estimated_tokens(ctx: RequestContext) -> int:
    """Prompt bytes / 4 (about a token each) plus the answer's cap when the client set one."""
    return ctx.body_bytes // 4 + 1 + (ctx.max_output_tokens or 0)


class RateLimit:
    def __init__(self, limiter: RateLimiter, config: RateLimitsConfig, keys: KeyCache | None) -> None:
        self.limiter = limiter
        self.config = config
        self.keys = keys

    def limits_for(self, principal: Principal) -> list[Limit]:
        limits: list[Limit] = []
        if principal.kind == "key":
            default = self.config.default_key
            rpm = principal.rpm if principal.rpm is not None else default.rpm
            tpm = principal.tpm if principal.tpm is not None else default.tpm
            if rpm or tpm:
                limits.append(Limit(f"key:{principal.key_id}", rpm, tpm))
        keys = self.keys
        if keys is not None:
            if principal.user_id:
                user = keys.users.get(principal.user_id)
                if user is not None and (user.rpm or user.tpm):
                    limits.append(Limit(f"user:{user.id}", user.rpm or 0, user.tpm or 0))
            if principal.team_id:
                team = keys.teams.get(principal.team_id)
                if team is not None and (team.rpm or team.tpm):
                    limits.append(Limit(f"team:{team.id}", team.rpm or 0, team.tpm or 0))
        glob = self.config.global_
        if glob.rpm or glob.tpm:
            limits.append(Limit("global", glob.rpm, glob.tpm))
        return limits

    async def process(self, ctx: RequestContext, call_next: Handler) -> Any:
        limits = self.limits_for(ctx.call.principal)
        if not limits:
            return await call_next(ctx)
        estimate = estimated_tokens(ctx)
        decision = await self.limiter.acquire(limits, estimate)
        if not decision.allowed:
            raise rate_limit_error(decision)
        call = ctx.call
        headers = decision.headers()
        if headers:
            call.headers = {**call.headers, **headers} if call.headers else headers
        try:
            return await call_next(ctx)
        finally:
            if not decision.degraded and any(limit.tpm for limit in limits):
                usage = call.usage
                # A cached answer used no provider tokens: only its admission estimate is given back.
                used = usage.input_tokens + usage.output_tokens if usage is not None and not call.cached else 0
                if used != estimate:
                    self.limiter.charge_nowait(limits, used - estimate)
