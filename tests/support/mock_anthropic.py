"""An in-process mock of Anthropic's API: ``POST /v1/messages``, ``POST /v1/messages/count_tokens``, ``GET /v1/models``.

It replays recorded fixtures like :class:`~tests.support.mock_upstream.MockUpstream` (same :class:`Scenario`
per model, same faults), and checks every request the way Anthropic would before answering: the key in
``x-api-key``, an ``anthropic-version``, ``max_tokens``, roles that alternate, tool results that answer the
tool uses of the turn before them, no empty text blocks. A request that fails a check is answered with
Anthropic's 400 (``invalid_request_error``) and its problems are kept on ``RecordedRequest.problems``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from .fixtures import Fixture, load_fixture, split_sse_events, sse_data
from .gateway import UPSTREAM_KEY
from .mock_upstream import MockUpstream, RecordedRequest, Scenario


def anthropic_sse_body(fx: Fixture) -> bytes:
    """The bytes Anthropic sent: the SSE file as is; a payload-per-line file re-framed with ``event:`` lines."""
    if fx.kind != "chunks":
        return fx.raw
    out = []
    for line in fx.raw.splitlines():
        if line.strip():
            out.append(b"event: " + json.loads(line)["type"].encode() + b"\ndata: " + line + b"\n\n")
    return b"".join(out)


@dataclass
class AnthropicRequest(RecordedRequest):
    """A request the mock received, with what Anthropic would have refused in it."""

    problems: list[str] = field(default_factory=list)


class MockAnthropic(MockUpstream):
    """``await MockAnthropic().start()``; ``replay(model, fixture)``; ``requests`` / ``last(model)`` after."""

    def __init__(self, *, api_keys: tuple[str, ...] = (UPSTREAM_KEY,), model_ids: list[str] | None = None,
                 page_size: int = 1000) -> None:
        super().__init__(model_ids=model_ids)
        #: The keys the mock accepts in ``x-api-key``.
        self.api_keys = api_keys
        #: ``GET /v1/models`` pages at most this many models (to exercise pagination).
        self.page_size = page_size
        self.requests: list[AnthropicRequest] = []  # type: ignore[assignment]

    async def start(self) -> MockAnthropic:
        await super().start()
        return self

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._anthropic_models)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)

    def replay(self, model: str, fixture: Fixture | str, **overrides: Any) -> Scenario:
        fx = load_fixture(fixture) if isinstance(fixture, str) else fixture
        if fx.is_stream:
            overrides.setdefault("body", anthropic_sse_body(fx))
        return self.on(model, Scenario.from_fixture(fx, **overrides))

    def last(self, model: str | None = None) -> AnthropicRequest:
        rec = super().last(model)
        assert isinstance(rec, AnthropicRequest)
        return rec

    # -- handlers -----------------------------------------------------------------------------------
    async def _record_anthropic(self, request: web.Request) -> AnthropicRequest:
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        rec = AnthropicRequest(
            method=request.method, path=request.path, headers=CIMultiDict(request.headers), body=raw, json=parsed,
            query=dict(request.query),
        )
        rec.problems = self._header_problems(rec)
        self.requests.append(rec)
        return rec

    def _header_problems(self, rec: AnthropicRequest) -> list[str]:
        problems = []
        if rec.headers.get("x-api-key") not in self.api_keys:
            problems.append("x-api-key is not the provider's key")
        if "authorization" in rec.headers:
            problems.append("an Authorization header was sent (Anthropic takes x-api-key)")
        if not rec.headers.get("anthropic-version"):
            problems.append("anthropic-version header missing")
        return problems

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record_anthropic(request)
        try:
            rec.problems.extend(message_request_problems(rec.json))
            if rec.problems:
                return _invalid(rec.problems)
            scenario = self.scenarios.get(rec.model or "")
            if scenario is None:
                return web.json_response(
                    {"type": "error", "error": {"type": "not_found_error", "message": f"model: {rec.model}"}},
                    status=404,
                )
            return await self._respond(request, scenario, rec)
        except (asyncio.CancelledError, ConnectionResetError):
            rec._client_went_away()
            raise
        finally:
            rec.done.set()

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record_anthropic(request)
        try:
            body = rec.json if isinstance(rec.json, dict) else {}
            if not isinstance(body.get("messages"), list):
                rec.problems.append("messages missing")
            if rec.problems:
                return _invalid(rec.problems)
            return web.json_response({"input_tokens": len(json.dumps(body["messages"])) // 4})
        finally:
            rec.done.set()

    async def _anthropic_models(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record_anthropic(request)
        try:
            if self.models_scenario is not None:
                return await self._respond(request, self.models_scenario, rec)
            if rec.problems:
                return _invalid(rec.problems)
            ids = self.model_ids if self.model_ids is not None else sorted(self.scenarios)
            limit = min(int(request.query.get("limit", "20")), self.page_size)
            after = request.query.get("after_id")
            start = ids.index(after) + 1 if after in ids else 0
            page = ids[start : start + limit]
            return web.json_response({
                "data": [
                    {"type": "model", "id": i, "display_name": i.title(), "created_at": "2025-02-19T00:00:00Z"}
                    for i in page
                ],
                "has_more": start + limit < len(ids),
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            })
        finally:
            rec.done.set()


def _invalid(problems: list[str]) -> web.Response:
    return web.json_response(
        {"type": "error", "error": {"type": "invalid_request_error", "message": "; ".join(problems)}}, status=400
    )


def message_request_problems(body: Any) -> list[str]:
    """What Anthropic would refuse in a Messages request body (the checks that matter to a translator)."""
    if not isinstance(body, dict):
        return ["the body is not a JSON object"]
    problems = []
    if not isinstance(body.get("model"), str) or not body["model"]:
        problems.append("model: field required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        problems.append("max_tokens: field required (a positive integer)")
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            problems.append("thinking.budget_tokens: must be >= 1024")
        elif isinstance(max_tokens, int) and budget >= max_tokens:
            problems.append("max_tokens must be greater than thinking.budget_tokens")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        problems.append("system: must be a string or a list of text blocks")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*problems, "messages: at least one message is required"]
    previous_role = None
    previous_tool_uses: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            problems.append(f"messages.{i}.role: must be user or assistant")
            continue
        if role == previous_role:
            problems.append(f"messages.{i}: roles must alternate between user and assistant")
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            problems.append(f"messages.{i}.content: must be a non-empty string or list")
            blocks = []
        tool_uses: set[str] = set()
        seen_other = False
        for j, block in enumerate(blocks):
            kind = block.get("type") if isinstance(block, dict) else None
            where = f"messages.{i}.content.{j}"
            if kind == "text":
                if not isinstance(block.get("text"), str) or not block["text"]:
                    problems.append(f"{where}: text content blocks must be non-empty")
                seen_other = True
            elif kind == "tool_use":
                if role != "assistant" or not isinstance(block.get("input"), dict) or not block.get("id"):
                    problems.append(f"{where}: tool_use needs an assistant turn, an id and an object input")
                tool_uses.add(str(block.get("id")))
            elif kind == "tool_result":
                if role != "user" or seen_other:
                    problems.append(f"{where}: tool_result blocks must come first in a user turn")
                if block.get("tool_use_id") not in previous_tool_uses:
                    problems.append(f"{where}: tool_result does not answer a tool_use of the previous turn")
            elif kind in ("thinking", "redacted_thinking"):
                if role != "assistant" or seen_other:
                    problems.append(f"{where}: thinking blocks must come first in an assistant turn")
                if kind == "thinking" and not block.get("signature"):
                    problems.append(f"{where}: thinking blocks need their signature")
            elif kind in ("image", "document"):
                source = block.get("source")
                if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
                    problems.append(f"{where}: source must be base64 or url")
                seen_other = True
            else:
                problems.append(f"{where}: unknown block type {kind!r}")
        previous_role, previous_tool_uses = role, tool_uses
    return problems


@dataclass
class Recording:
    """What a recorded Anthropic stream holds, read naively (every event parsed whole, nothing shared with the
    gateway's code): the reference the translator's output is checked against."""

    id: str = ""
    model: str = ""
    text: str = ""
    reasoning: str = ""
    #: (id, name, arguments as the client must get them: the partial_json joined, "{}" when there was none)
    tool_calls: list[tuple[str, str, str]] = field(default_factory=list)
    thinking_blocks: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    ended: bool = False
    error: dict[str, Any] | None = None

    @property
    def prompt_tokens(self) -> int:
        u = self.usage
        return u.get("input_tokens", 0) + (u.get("cache_read_input_tokens") or 0) + (
            u.get("cache_creation_input_tokens") or 0)


def read_recording(data: bytes) -> Recording:
    rec = Recording()
    blocks: dict[int, dict[str, Any]] = {}
    for raw in split_sse_events(data):
        payload_bytes = sse_data(raw)
        if not payload_bytes:
            continue
        p = json.loads(payload_bytes)
        kind = p["type"]
        if kind == "message_start":
            rec.id, rec.model = p["message"]["id"], p["message"]["model"]
            rec.usage = dict(p["message"]["usage"])
        elif kind == "content_block_start":
            block = dict(p["content_block"])
            block["_args"] = ""
            block["_thinking"] = block.get("thinking", "")
            block["_signature"] = block.get("signature", "")
            blocks[p["index"]] = block
        elif kind == "content_block_delta":
            block, delta = blocks[p["index"]], p["delta"]
            if delta["type"] == "text_delta":
                rec.text += delta["text"]
            elif delta["type"] == "input_json_delta":
                block["_args"] += delta["partial_json"]
            elif delta["type"] == "thinking_delta":
                rec.reasoning += delta["thinking"]
                block["_thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["_signature"] += delta["signature"]
        elif kind == "content_block_stop":
            block = blocks[p["index"]]
            if block["type"] == "tool_use":
                rec.tool_calls.append((block["id"], block["name"], block["_args"] or "{}"))
            elif block["type"] == "thinking":
                rec.thinking_blocks.append(
                    {"type": "thinking", "thinking": block["_thinking"], "signature": block["_signature"]})
            elif block["type"] == "redacted_thinking":
                rec.thinking_blocks.append({"type": "redacted_thinking", "data": block["data"]})
        elif kind == "message_delta":
            rec.stop_reason = p["delta"]["stop_reason"]
            rec.usage.update({k: v for k, v in p.get("usage", {}).items() if v is not None})
        elif kind == "message_stop":
            rec.ended = True
        elif kind == "error":
            rec.error = p["error"]
            break
    return rec
