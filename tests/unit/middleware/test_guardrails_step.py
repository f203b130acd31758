"""The chain's Guardrails step (``middleware.guardrails.Guardrails``) driven directly, below the HTTP layer.

The end-to-end tests (``tests/e2e/test_guardrails.py``) cover redaction, restore and blocking through the SDKs;
these cover what they cannot reach: requests the step must not touch (other endpoints, unparsed bodies,
callers no guardrail is scoped to), answers it must not touch (errors, bodies that are not bytes), a whole
answer that is a server-sent-event body (a cache hit replayed as a stream) edited and reviewed, and every
decision reaching the metrics, the audit trail and, for blocks and logs, the log. The guardrails are real
(``RegexFilter``, ``SystemPrompt``, ``ContentFilter`` with a scoring backend of the test's own), the metrics and
the file audit trail too.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from aiohttp import web

from gomodel_proxy.audit.trail import FileAuditTrail
from gomodel_proxy.core.errors import GuardrailBlockedError
from gomodel_proxy.core.interfaces import RequestContext
from gomodel_proxy.core.types import ANONYMOUS, CallRecord, Principal
from gomodel_proxy.guardrails.content_filter import ContentFilter
from gomodel_proxy.guardrails.guardrail_set import GuardrailSet
from gomodel_proxy.guardrails.interface import Guardrail, GuardrailSpec
from gomodel_proxy.guardrails.regex_filter import RegexFilter
from gomodel_proxy.guardrails.system_prompt import SystemPrompt
from gomodel_proxy.middleware.guardrails import Guardrails
from gomodel_proxy.observability.metrics import Metrics

AWS = "AKIAIOSFODNN7EXAMPLE"
KEY = Principal(kind="key", key_id="k1", user_id="alice", team_id="research")


# -- helpers ------------------------------------------------------------------------------------------------
class Logger:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, message: str, **fields: Any) -> None:
        self.records.append(("info", message, fields))

    def warning(self, message: str, **fields: Any) -> None:
        self.records.append(("warning", message, fields))

    def error(self, message: str, **fields: Any) -> None:
        self.records.append(("error", message, fields))


class Audit:
    """Collects what the step writes to the audit trail."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def log_middleware_step(self, entry: Mapping[str, Any]) -> None:
        self.entries.append(dict(entry))

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class Scorer:
    """A moderation classifier of the test's own: ``violence`` 0.9 for any text mentioning a bomb."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    async def score(self, texts: list[str]) -> dict[str, float]:
        self.seen.append(list(texts))
        return {"violence": 0.9} if any("bomb" in t.lower() for t in texts) else {"violence": 0.01}


def spec(name: str, kind: Any, config: Mapping[str, Any], priority: int = 10,
         keys: tuple[str, ...] | None = None, teams: tuple[str, ...] | None = None) -> GuardrailSpec:
    return GuardrailSpec(name=name, kind=kind, enabled=True, priority=priority,
                         config=MappingProxyType(dict(config)), keys=keys, teams=teams)


def regex_entry(keys: tuple[str, ...] | None = None) -> tuple[GuardrailSpec, Guardrail]:
    config = {"patterns": (
        {"name": "aws-key", "pattern": re.compile(r"AKIA[0-9A-Z]{16}"), "action": "block"},
        {"name": "ticket", "pattern": re.compile(r"TICKET-\d{4,}"), "action": "redact"},
        {"name": "codename", "pattern": re.compile(r"Bluebird"), "action": "log"},
    )}
    s = spec("secrets", "regex", config, priority=5, keys=keys)
    return s, RegexFilter(s.name, s.priority, s.config, hold_back=32)


def moderation_entry(scorer: Scorer) -> tuple[GuardrailSpec, Guardrail]:
    s = spec("moderation", "content-filter", {"block_categories": ("violence",), "backend": "moderation",
                                              "scan_output": True}, priority=30)
    return s, ContentFilter(s, backend=scorer)


def system_entry() -> tuple[GuardrailSpec, Guardrail]:
    s = spec("system-prompt", "system-prompt", {"prepend": "Follow the policy."}, priority=1)
    return s, SystemPrompt(s.name, s.priority, s.config)


def step(*entries: tuple[GuardrailSpec, Guardrail], audit: Any = None) -> Guardrails:
    return Guardrails(GuardrailSet(list(entries)), metrics=Metrics(), audit=audit if audit is not None else Audit(),
                      logger=Logger())


def audit_of(guard: Guardrails) -> list[dict[str, Any]]:
    assert isinstance(guard.audit, Audit)
    return guard.audit.entries


def decisions(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    """``gomodel_guardrail_decisions_total`` by (guardrail, stage, action)."""
    found: dict[tuple[str, str, str], float] = {}
    pattern = re.compile(r'^gomodel_guardrail_decisions_total\{action="([^"]*)",guardrail="([^"]*)",'
                         r'stage="([^"]*)"\} (\S+)$', re.MULTILINE)
    for action, guardrail, stage, value in pattern.findall(metrics.render().decode()):
        found[(guardrail, stage, action)] = float(value)
    return found


def chat(*texts: str, **extra: Any) -> dict[str, Any]:
    return {"model": "up/m", "messages": [{"role": "user", "content": t} for t in texts], **extra}


def context(body: dict[str, Any] | None, *, endpoint: str = "chat.completions", principal: Principal = KEY,
            request_id: str = "req-1") -> RequestContext:
    call = CallRecord(request_id=request_id, endpoint=endpoint, principal=principal, model_requested="up/m")
    return RequestContext(call, body, 0)


def chat_json(content: str) -> bytes:
    return json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}}).encode()


def chat_sse(deltas: Iterable[str]) -> bytes:
    base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}]
    events += [{**base, "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": None}]} for d in deltas]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def sse_text(body: bytes) -> str:
    chunks = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


class Next:
    """The rest of the chain: records the body it was handed and returns ``result``."""

    def __init__(self, result: Any = None) -> None:
        self.result = result if result is not None else web.Response(body=chat_json("ok"),
                                                                      content_type="application/json")
        self.bodies: list[Any] = []

    async def __call__(self, ctx: RequestContext) -> Any:
        self.bodies.append(json.loads(json.dumps(ctx.body)))
        return self.result


# -- requests the step leaves alone -------------------------------------------------------------------------
@pytest.mark.parametrize(("endpoint", "body"), [
    ("embeddings", {"model": "up/e", "input": f"TICKET-1234 {AWS}"}),
    ("passthrough", None),
    ("chat.completions", None),
])
async def test_other_endpoints_and_unparsed_bodies_pass_untouched(endpoint: str, body: dict[str, Any] | None
                                                                  ) -> None:
    audit = Audit()
    guard = step(regex_entry(), system_entry(), audit=audit)
    answer = web.Response(body=chat_json(f"here: {AWS}"), content_type="application/json")
    nxt = Next(answer)
    ctx = context(body, endpoint=endpoint)
    result = await guard.process(ctx, nxt)
    assert result is answer and result.body == chat_json(f"here: {AWS}")  # the answer is not scanned either
    assert nxt.bodies == [body]
    assert ctx.call.stream_filters is None and ctx.call.outcome == "ok"
    assert audit.entries == [] and decisions(guard.metrics) == {}


async def test_a_caller_no_guardrail_is_scoped_to_passes_untouched() -> None:
    audit = Audit()
    guard = step(regex_entry(keys=("k-other",)), audit=audit)
    answer = web.Response(body=chat_json(f"key {AWS}"), content_type="application/json")
    nxt = Next(answer)
    ctx = context(chat(f"See TICKET-1234, key {AWS}", stream=True))
    assert await guard.process(ctx, nxt) is answer
    assert nxt.bodies[0]["messages"][0]["content"] == f"See TICKET-1234, key {AWS}"
    assert ctx.call.stream_filters is None and audit.entries == []
    # the same guardrail scoped to this caller's key does act
    scoped = step(regex_entry(keys=("k1",)))
    with pytest.raises(GuardrailBlockedError):
        await scoped.process(context(chat(f"key {AWS}")), Next())


# -- the way in ---------------------------------------------------------------------------------------------
async def test_a_blocked_prompt_never_reaches_the_provider_and_is_recorded(tmp_path: Path) -> None:
    logger = Logger()
    audit = FileAuditTrail(tmp_path / "audit" / "trail.jsonl", logger=logger)
    await audit.start()
    guard = Guardrails(GuardrailSet([regex_entry(), system_entry()]), metrics=Metrics(), audit=audit, logger=logger)
    nxt = Next()
    ctx = context(chat(f"TICKET-4242 with key {AWS}"), request_id="blocked-1")
    with pytest.raises(GuardrailBlockedError) as caught:
        await guard.process(ctx, nxt)
    await audit.close()
    assert caught.value.guardrail == "secrets" and AWS not in str(caught.value)
    assert nxt.bodies == [] and ctx.call.outcome == "guardrail_blocked"
    entries = [json.loads(line) for line in (tmp_path / "audit" / "trail.jsonl").read_text().splitlines()]
    assert [(e["guardrail"], e["stage"], e["action"], e["detail"]) for e in entries] == [
        ("system-prompt", "input", "rewrite", "prepend"),
        ("secrets", "input", "redact", "pattern=ticket"),
        ("secrets", "input", "block", "pattern=aws-key"),
    ]
    first = entries[0]
    assert {k: first[k] for k in ("request_id", "step", "endpoint", "model", "key_id", "user_id", "team_id")} == {
        "request_id": "blocked-1", "step": "guardrail", "endpoint": "chat.completions", "model": "up/m",
        "key_id": "k1", "user_id": "alice", "team_id": "research"}
    text = (tmp_path / "audit" / "trail.jsonl").read_text()
    assert AWS not in text and "TICKET-4242" not in text
    assert decisions(guard.metrics) == {("system-prompt", "input", "rewrite"): 1.0,
                                        ("secrets", "input", "redact"): 1.0, ("secrets", "input", "block"): 1.0}
    logged = [(m, f["guardrail"], f["action"]) for lv, m, f in logger.records if lv == "info"]
    assert logged == [("guardrail decision", "secrets", "block")]  # blocks and logs only


async def test_the_prompt_is_rewritten_before_the_provider_and_logs_are_logged() -> None:
    guard = step(regex_entry(), system_entry())
    nxt = Next()
    ctx = context(chat("About Bluebird and TICKET-9999"), principal=ANONYMOUS)
    await guard.process(ctx, nxt)
    sent = nxt.bodies[0]["messages"]
    assert sent[0] == {"role": "system", "content": "Follow the policy."}
    assert sent[1]["content"] == "About Bluebird and [REDACTED:ticket]"
    entries = audit_of(guard)
    assert [(e["guardrail"], e["action"]) for e in entries] == [
        ("system-prompt", "rewrite"), ("secrets", "log"), ("secrets", "redact")]
    assert entries[0]["key_id"] is None and entries[0]["team_id"] is None
    assert [f["action"] for lv, _, f in guard.logger.records] == ["log"]


# -- streamed answers ---------------------------------------------------------------------------------------
async def test_a_stream_filter_joins_the_ones_already_registered() -> None:
    guard = step(regex_entry())

    class Earlier:
        async def feed(self, data: bytes) -> bytes:
            return data

        async def finish(self) -> bytes:
            return b""

    earlier = Earlier()
    ctx = context(chat("hello", stream=True))
    ctx.call.stream_filters = [earlier]
    streamed = web.StreamResponse(status=200)
    assert await guard.process(ctx, Next(streamed)) is streamed
    filters = ctx.call.stream_filters
    assert filters is not None and len(filters) == 2 and filters[0] is earlier
    # the filter it added edits the stream as the relay passes it
    stream = chat_sse(["Your ticket is TICK", "ET-12345 today."])
    sent = b""
    for i in range(0, len(stream), 17):  # cut through events and through the ticket
        sent += await filters[1].feed(stream[i:i + 17])
    sent += await filters[1].finish()
    assert sse_text(sent) == "Your ticket is [REDACTED:ticket] today."


async def test_a_stream_without_editing_guardrails_gets_no_filter() -> None:
    guard = step(system_entry())
    ctx = context(chat("hello", stream=True))
    await guard.process(ctx, Next(web.StreamResponse(status=200)))
    assert ctx.call.stream_filters is None


# -- whole answers ------------------------------------------------------------------------------------------
async def test_a_whole_sse_answer_is_edited_like_a_stream_and_reviewed() -> None:
    """A streamed request answered whole (a cache hit replayed as a stream) is edited and reviewed at once."""
    scorer = Scorer()
    guard = step(regex_entry(), moderation_entry(scorer))
    hit = web.Response(body=chat_sse(["Ask about TICKET-", "7777 at the desk."]), content_type="text/event-stream")
    ctx = context(chat("how do I file a ticket?", stream=True))
    result = await guard.process(ctx, Next(hit))
    assert result is hit and result.content_type == "text/event-stream" and isinstance(result.body, bytes)
    assert sse_text(result.body) == "Ask about [REDACTED:ticket] at the desk."
    assert result.body.rstrip().endswith(b"data: [DONE]")
    assert scorer.seen == [["how do I file a ticket?"], ["Ask about [REDACTED:ticket] at the desk."]]
    assert ctx.call.outcome == "ok"
    assert [(e["stage"], e["action"]) for e in audit_of(guard)] == [("output", "redact")]


async def test_a_whole_sse_answer_blocked_by_the_review_is_refused_and_recorded() -> None:
    scorer = Scorer()
    audit = Audit()
    guard = step(moderation_entry(scorer), audit=audit)
    hit = web.Response(body=chat_sse(["Here is how to build a bo", "mb: first..."]),
                       content_type="text/event-stream")
    ctx = context(chat("tell me a story", stream=True), request_id="review-1")
    with pytest.raises(GuardrailBlockedError) as caught:
        await guard.process(ctx, Next(hit))
    assert caught.value.stage == "output" and caught.value.guardrail == "moderation"
    assert "bomb" not in str(caught.value)
    assert scorer.seen[-1] == ["Here is how to build a bomb: first..."]  # the text joined across events
    assert ctx.call.outcome == "guardrail_blocked"
    assert [(e["request_id"], e["guardrail"], e["stage"], e["action"], e["detail"]) for e in audit.entries] == [
        ("review-1", "moderation", "output", "block", "category=violence score=0.90")]
    assert decisions(guard.metrics) == {("moderation", "output", "block"): 1.0}
    assert [f["action"] for lv, _, f in guard.logger.records if lv == "info"] == ["block"]


async def test_a_whole_json_answer_blocked_by_its_text_filter() -> None:
    guard = step(regex_entry())
    ctx = context(chat("hi"))
    with pytest.raises(GuardrailBlockedError):
        await guard.process(ctx, Next(web.Response(body=chat_json(f"use {AWS}"), content_type="application/json")))
    assert ctx.call.outcome == "guardrail_blocked"
    assert [(e["stage"], e["action"]) for e in audit_of(guard)] == [("output", "block")]


async def test_a_clean_answer_keeps_its_bytes() -> None:
    scorer = Scorer()
    guard = step(regex_entry(), moderation_entry(scorer))
    body = chat_json("Paris is the capital.")
    answer = web.Response(body=body, content_type="application/json")
    result = await guard.process(context(chat("capital of France?")), Next(answer))
    assert result is answer and result.body is body
    assert scorer.seen[-1] == ["Paris is the capital."]
    assert audit_of(guard) == []


@pytest.mark.parametrize("answer", [
    pytest.param(lambda: web.Response(status=500, body=chat_json(f"error near {AWS}"),
                                      content_type="application/json"), id="an error"),
    pytest.param(lambda: web.Response(body=io.BytesIO(chat_json(f"key {AWS}")), content_type="application/json"),
                 id="a body that is not bytes"),
    pytest.param(lambda: web.StreamResponse(status=200), id="an already streamed answer"),
])
async def test_answers_the_step_cannot_or_must_not_edit_pass_as_they_are(answer: Any) -> None:
    scorer = Scorer()
    guard = step(regex_entry(), moderation_entry(scorer))
    result_in = answer()
    before = result_in.body if isinstance(result_in, web.Response) else None
    ctx = context(chat("hello"))
    result = await guard.process(ctx, Next(result_in))
    assert result is result_in
    if isinstance(result, web.Response):
        assert result.body is before
    assert scorer.seen == [["hello"]]  # the prompt was reviewed, the answer never
    assert ctx.call.outcome == "ok" and audit_of(guard) == []


async def test_guardrails_without_output_hooks_leave_the_answer_alone() -> None:
    guard = step(system_entry())
    body = chat_json(f"key {AWS}")
    answer = web.Response(body=body, content_type="application/json")
    result = await guard.process(context(chat("hi")), Next(answer))
    assert result is answer and result.body is body
    assert [(e["guardrail"], e["action"]) for e in audit_of(guard)] == [("system-prompt", "rewrite")]


async def test_a_failing_provider_still_records_the_input_decisions() -> None:
    guard = step(regex_entry())

    async def failing(ctx: RequestContext) -> Any:
        raise RuntimeError("provider exploded")

    ctx = context(chat("see TICKET-5555"))
    with pytest.raises(RuntimeError):
        await guard.process(ctx, failing)
    assert [(e["stage"], e["action"]) for e in audit_of(guard)] == [("input", "redact")]
    assert ctx.call.outcome == "ok"
