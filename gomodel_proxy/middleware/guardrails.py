"""The chain's Guardrails step: the configured guardrails on the request and on its answer.

On the way in each applicable guardrail, in priority order, may rewrite the parsed body (redact, set the
system prompt, clamp ``max_tokens``) or refuse with a 400 naming itself. On the way out the answer's text
passes through the guardrails' text filters: a whole answer is edited before it is sent (and reviewed by
a moderation backend when one is configured); a stream is edited as it passes, by a filter the relay runs
after its tap. Every decision is counted in ``/metrics``, written to the audit trail and, when it blocked
or was asked to be logged, to the log; none carries the text it was about.

Only the three model APIs are guarded (chat completions, Responses, Messages); pass-through, embeddings
and the rest go by untouched.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gomodel_proxy.audit.trail import AuditTrail
from gomodel_proxy.core.errors import GuardrailBlockedError
from gomodel_proxy.core.interfaces import Handler, RequestContext
from gomodel_proxy.guardrails.answer_text import AnswerStreamEditor, edit_answer_body
from gomodel_proxy.guardrails.guardrail_set import GuardrailSet
from gomodel_proxy.guardrails.interface import BaseGuardrail, GuardedApi, GuardedRequest, Guardrail, TextFilter
from gomodel_proxy.guardrails.window import WindowedFilter, chain_filters, flatten, merge_windows
from gomodel_proxy.observability.metrics import Metrics

#: The endpoints guarded, and the API each one speaks.
GUARDED: dict[str, GuardedApi] = {"chat.completions": "chat", "responses": "responses", "messages": "messages"}


class _PassThrough:
    """The text filter of an answer no guardrail edits (its text is still read for the review)."""

    def feed(self, text: str) -> str:
        return text

    def finish(self) -> str:
        return ""


class _StreamOutput:
    """The relay's view of the guardrails on a streamed answer (``core.interfaces.StreamFilter``)."""

    __slots__ = ("editor",)

    def __init__(self, editor: AnswerStreamEditor) -> None:
        self.editor = editor

    async def feed(self, data: bytes) -> bytes:
        return self.editor.feed(data)

    async def finish(self) -> bytes:
        return self.editor.finish()


class Guardrails:
    def __init__(self, guardrails: GuardrailSet, *, metrics: Metrics, audit: AuditTrail, logger: Any) -> None:
        self.guardrails = guardrails
        self.metrics = metrics
        self.audit = audit
        self.logger = logger
        #: The guardrails of each applicable tuple that review whole answers (``review_output``), worked
        #: out once per tuple (the tuples come from ``GuardrailSet.applicable``: a handful).
        self._reviewers: dict[tuple[Guardrail, ...], tuple[Guardrail, ...]] = {}

    async def process(self, ctx: RequestContext, call_next: Handler) -> Any:
        call = ctx.call
        api = GUARDED.get(call.endpoint)
        body = ctx.body
        if api is None or body is None:
            return await call_next(ctx)
        active = self.guardrails.applicable(call.principal)
        if not active:
            return await call_next(ctx)
        req = GuardedRequest(api, body, call.principal, stream=body.get("stream") is True)
        try:
            try:
                for guardrail in active:
                    await guardrail.process_input(req)
            except GuardrailBlockedError:
                call.outcome = "guardrail_blocked"
                raise
            return await self._answer(ctx, call_next, req, active)
        finally:
            if req.decisions:
                self._record(req, ctx)

    async def _answer(self, ctx: RequestContext, call_next: Handler, req: GuardedRequest,
                      active: tuple[Guardrail, ...]) -> Any:
        reviewers = self._reviewers.get(active)
        if reviewers is None:
            if len(self._reviewers) > 1024:  # scoping gives few distinct tuples; bounded all the same
                self._reviewers.clear()
            reviewers = self._reviewers[active] = tuple(
                g for g in active if type(g).review_output is not BaseGuardrail.review_output)

        def make() -> TextFilter:
            # The pattern filters share one hold-back window (theirs would add up), ahead of the others
            # (restoring placeholders), which then see text no pattern holds any more.
            filters = flatten([f for g in active if (f := g.process_output(req)) is not None])
            if not filters:
                return _PassThrough()
            windows = [f for f in filters if isinstance(f, WindowedFilter)]
            if len(windows) > 1:
                filters = [merge_windows(windows), *(f for f in filters if not isinstance(f, WindowedFilter))]
            return chain_filters(filters) or _PassThrough()

        edits = not isinstance(make(), _PassThrough)
        call = ctx.call
        if req.stream and edits:
            filters = call.stream_filters
            if filters is None:
                filters = call.stream_filters = []
            filters.append(_StreamOutput(AnswerStreamEditor(req.api, make)))
        result = await call_next(ctx)
        if not (edits or reviewers) or not isinstance(result, web.Response) or result.status != 200:
            return result
        raw = result.body
        if not isinstance(raw, bytes):
            return result
        try:
            if (result.content_type or "").startswith("text/event-stream"):
                editor = AnswerStreamEditor(req.api, make)
                edited = editor.feed(raw) + editor.finish()
                texts = editor.texts
            else:
                edited, texts = edit_answer_body(req.api, raw, make)
            for guardrail in reviewers:
                await guardrail.review_output(req, "\n".join(texts))
        except GuardrailBlockedError:
            call.outcome = "guardrail_blocked"
            raise
        if edited is not raw:
            result.body = edited
        return result

    def _record(self, req: GuardedRequest, ctx: RequestContext) -> None:
        call = ctx.call
        principal = call.principal
        notes = call.notes if call.notes is not None else {}
        notes["guardrails"] = [{"guardrail": d.guardrail, "stage": d.stage, "action": d.action, "detail": d.detail}
                               for d in req.decisions]
        call.notes = notes
        for d in req.decisions:
            self.metrics.guardrail_decision(d.guardrail, d.stage, d.action)
            self.audit.log_middleware_step({
                "request_id": call.request_id, "step": "guardrail", "guardrail": d.guardrail, "stage": d.stage,
                "action": d.action, "detail": d.detail, "endpoint": call.endpoint, "model": call.model_requested,
                "key_id": principal.key_id, "user_id": principal.user_id, "team_id": principal.team_id,
            })
            if d.action in ("block", "log"):
                self.logger.info("guardrail decision", request_id=call.request_id, guardrail=d.guardrail,
                                 stage=d.stage, action=d.action, detail=d.detail)
