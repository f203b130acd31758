"""An in-process mock of Google's Gemini API (v1beta): generateContent, streamGenerateContent, batchEmbedContents,
and the model list, at ``<url>/v1beta``.

It replays recorded fixtures like :class:`~tests.support.mock_upstream.MockUpstream` (same :class:`Scenario`
per model, same faults; the model is the one named in the URL), and checks each request the way Gemini
would before answering: the key in ``x-goog-api-key`` (a wrong or missing key gets Gemini's recorded
``API_KEY_INVALID`` answer), never a key in the URL, ``alt=sse`` on streams, roles ``user``/``model`` that
alternate, no empty parts, function responses that answer the function calls of the turn before them,
only Schema keys Gemini knows in tool declarations, and, for Gemini 3 models, the thought signature on the
first function call of each step of the current turn (for every model with ``require_signatures=True``,
so that a Gemini 2.5 recording can check a round trip too). A request that fails a check gets Gemini's 400
``INVALID_ARGUMENT`` and keeps its problems on ``GeminiRequest.problems``.

The JSON-array stream recordings were made without ``alt=sse``; the gateway always asks for ``alt=sse``, for
which Gemini sends the same objects as SSE events: :func:`gemini_stream_body` re-frames them so.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from .fixtures import Fixture, load_fixture
from .gateway import UPSTREAM_KEY
from .mock_upstream import MockUpstream, RecordedRequest, Scenario

#: Gemini's Schema keys; any other key in a function declaration's parameters is refused.
SCHEMA_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
    "propertyOrdering", "default", "items", "minimum", "maximum",
})
BAD_KEY_FIXTURE = "gemini/generate-content/error-400-api-key-invalid"
#: Gemini's own words for a missing signature (quoted on discuss.ai.google.dev).
MISSING_SIGNATURE = (
    "Function call is missing a thought_signature in functionCall parts. This is required for tools to work "
    "correctly, and missing thought_signature may lead to degraded model performance."
)


def gemini_stream_body(fx: Fixture) -> bytes:
    """The bytes of ``streamGenerateContent?alt=sse`` for a recording: SSE as is; payload lines and JSON-array
    elements framed as ``data: <json>`` events with Gemini's CRLF blank lines (and, like Gemini, no [DONE])."""
    if fx.kind == "sse":
        return fx.raw
    if fx.kind == "chunks":
        payloads = [line for line in fx.raw.splitlines() if line.strip()]
    else:
        array = json.loads(fx.raw)
        assert isinstance(array, list), f"{fx.rel} is not a JSON-array stream"
        payloads = [json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode() for item in array]
    return b"".join(b"data: " + p + b"\r\n\r\n" for p in payloads)


def gemini_stream_payloads(fx: Fixture) -> list[dict[str, Any]]:
    """The recorded stream's ``GenerateContentResponse`` objects, in order."""
    if fx.kind == "json":
        return list(json.loads(fx.raw))
    out = []
    for line in gemini_stream_body(fx).split(b"\r\n\r\n"):
        if line.startswith(b"data:"):
            out.append(json.loads(line[5:]))
    return out


def is_stream_fixture(fx: Fixture) -> bool:
    return fx.rel.startswith("gemini/stream-generate-content/")


@dataclass
class GeminiRequest(RecordedRequest):
    """A request the mock received: the model and the method named in its URL, and what Gemini would refuse."""

    url_model: str = ""
    operation: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def model(self) -> str | None:
        return self.url_model or None


class MockGemini(MockUpstream):
    """``await MockGemini().start()``; ``replay(model, fixture)``; ``requests`` / ``last(model)`` after."""

    def __init__(self, *, api_key: str = UPSTREAM_KEY, model_ids: list[str] | None = None, page_size: int = 1000,
                 check_requests: bool = True, require_signatures: bool | None = None) -> None:
        super().__init__(model_ids=model_ids)
        self.api_key = api_key
        self.page_size = page_size
        self.check_requests = check_requests
        #: Whether function calls sent back need their thought signature: None = as Gemini, for gemini-3 models.
        self.require_signatures = require_signatures
        self.requests: list[GeminiRequest] = []  # type: ignore[assignment]

    async def start(self) -> MockGemini:
        await super().start()
        return self

    def last(self, model: str | None = None) -> GeminiRequest:
        rec = super().last(model)
        assert isinstance(rec, GeminiRequest)
        return rec

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1beta/models", self._gemini_models)
        app.router.add_post("/v1beta/models/{spec}", self._gemini_call)

    @property
    def base_url(self) -> str:
        return self.url + "/v1beta"

    def replay(self, model: str, fixture: Fixture | str, **overrides: Any) -> Scenario:
        """Answer ``model`` with a recorded Gemini fixture; streams as ``alt=sse`` bytes."""
        fx = load_fixture(fixture) if isinstance(fixture, str) else fixture
        if is_stream_fixture(fx):
            values: dict[str, Any] = {"body": gemini_stream_body(fx), "content_type": "text/event-stream",
                                      "stream": True}
            values.update(overrides)
            return self.on(model, Scenario(**values))
        return self.on(model, Scenario.from_fixture(fx, **overrides))

    # -- handlers -----------------------------------------------------------------------------------
    async def _record_gemini(self, request: web.Request) -> GeminiRequest:
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        spec = request.match_info.get("spec", "")
        model, _, operation = spec.partition(":")
        rec = GeminiRequest(
            method=request.method, path=request.path, headers=CIMultiDict(request.headers), body=raw, json=parsed,
            query=dict(request.query), url_model=model, operation=operation,
        )
        self.requests.append(rec)
        return rec

    def _key_problem(self, rec: GeminiRequest) -> web.Response | None:
        if any(k.lower() == "key" for k in rec.query):
            rec.problems.append("the API key was sent in the URL")
        if rec.headers.get("x-goog-api-key") != self.api_key:
            rec.problems.append("wrong or missing x-goog-api-key")
            fx = load_fixture(BAD_KEY_FIXTURE)
            return web.Response(status=400, body=fx.raw, content_type="application/json")
        return None

    async def _gemini_models(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record_gemini(request)
        try:
            refused = self._key_problem(rec)
            if refused is not None:
                return refused
            if self.models_scenario is not None:
                return await self._respond(request, self.models_scenario, rec)
            ids = self.model_ids if self.model_ids is not None else sorted(self.scenarios)
            size = min(self.page_size, int(request.query.get("pageSize", "50")))
            start = int(request.query.get("pageToken") or 0)
            page: dict[str, Any] = {"models": [
                {"name": f"models/{i}", "displayName": i, "supportedGenerationMethods": ["generateContent"]}
                for i in ids[start : start + size]
            ]}
            if start + size < len(ids):
                page["nextPageToken"] = str(start + size)
            return web.json_response(page)
        finally:
            rec.done.set()

    async def _gemini_call(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record_gemini(request)
        try:
            refused = self._key_problem(rec)
            if refused is not None:
                return refused
            if rec.operation not in ("generateContent", "streamGenerateContent", "batchEmbedContents"):
                return _gemini_error(404, f"method {rec.operation!r} is not served by the mock", "NOT_FOUND")
            if self.check_requests:
                rec.problems.extend(self._problems(rec))
                if rec.problems:
                    return _gemini_error(400, "; ".join(rec.problems), "INVALID_ARGUMENT")
            scenario = self.scenarios.get(rec.url_model)
            if scenario is None:
                return _gemini_error(
                    404, f"models/{rec.url_model} is not found for API version v1beta (mock: no scenario).",
                    "NOT_FOUND",
                )
            return await self._respond(request, scenario, rec)
        except (asyncio.CancelledError, ConnectionResetError):
            rec._client_went_away()
            raise
        finally:
            rec.done.set()

    # -- what Gemini would refuse ------------------------------------------------------------------------
    def _problems(self, rec: GeminiRequest) -> list[str]:
        body = rec.json
        if not isinstance(body, dict):
            return ["the body is not a JSON object"]
        if rec.operation == "batchEmbedContents":
            return _embed_problems(body, rec.url_model)
        problems = []
        if rec.operation == "streamGenerateContent" and rec.query.get("alt") != "sse":
            problems.append("a stream without alt=sse would be a JSON array, not server-sent events")
        if rec.operation == "generateContent" and rec.query:
            problems.append(f"unexpected query {rec.query}")
        signatures = self.require_signatures
        if signatures is None:
            signatures = rec.url_model.startswith("gemini-3")
        problems.extend(_content_problems(body, gemini3=signatures))
        for tool in body.get("tools") or []:
            for declaration in tool.get("functionDeclarations") or []:
                problems.extend(_schema_problems(declaration.get("parameters"), f"tool {declaration.get('name')}"))
        schema = (body.get("generationConfig") or {}).get("responseSchema")
        problems.extend(_schema_problems(schema, "responseSchema"))
        return problems


def _gemini_error(status: int, message: str, google_status: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message, "status": google_status}}, status=status)


def _content_problems(body: dict[str, Any], *, gemini3: bool) -> list[str]:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return ["contents is not specified"]
    problems = []
    previous_role = None
    pending_calls: list[str] = []
    current_turn_start = 0
    for i, content in enumerate(contents):
        role = content.get("role")
        parts = content.get("parts")
        if role not in ("user", "model"):
            problems.append(f"contents[{i}].role must be user or model, not {role!r}")
        if role == previous_role:
            problems.append(f"contents[{i}] has the same role as the content before it")
        previous_role = role
        if not isinstance(parts, list) or not parts:
            problems.append(f"contents[{i}].parts must not be empty")
            continue
        for j, part in enumerate(parts):
            if "text" in part and not part["text"] and "thoughtSignature" not in part:
                problems.append(f"contents[{i}].parts[{j}] is an empty text part")
            call = part.get("functionCall")
            if call is not None and not isinstance(call.get("args", {}), dict):
                problems.append(f"contents[{i}].parts[{j}].functionCall.args must be an object")
        responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
        if responses:
            names = [r.get("name") for r in responses]
            if sorted(map(str, names)) != sorted(pending_calls):
                problems.append(f"contents[{i}] answers function calls {names}, the model asked for {pending_calls}")
            if any(not isinstance(r.get("response"), dict) for r in responses):
                problems.append(f"contents[{i}]: a functionResponse.response must be an object")
        elif role == "user":
            current_turn_start = i
        pending_calls = [str(p["functionCall"].get("name")) for p in parts if "functionCall" in p] \
            if role == "model" else []
    if gemini3:
        for i in range(current_turn_start, len(contents)):
            calls = [p for p in contents[i].get("parts") or [] if "functionCall" in p]
            if contents[i].get("role") == "model" and calls and "thoughtSignature" not in calls[0]:
                problems.append(f"{MISSING_SIGNATURE} (contents[{i}])")
    return problems


def _schema_problems(schema: Any, where: str) -> list[str]:
    if schema is None:
        return []
    if not isinstance(schema, dict):
        return [f"{where}: a schema must be an object"]
    problems = [f'{where}: Invalid JSON payload received. Unknown name "{key}"' for key in schema
                if key not in SCHEMA_KEYS]
    for name, sub in (schema.get("properties") or {}).items():
        problems.extend(_schema_problems(sub, f"{where}.properties.{name}"))
    if "items" in schema:
        problems.extend(_schema_problems(schema["items"], f"{where}.items"))
    for k, sub in enumerate(schema.get("anyOf") or []):
        problems.extend(_schema_problems(sub, f"{where}.anyOf[{k}]"))
    return problems


def _embed_problems(body: dict[str, Any], model: str) -> list[str]:
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        return ["requests must not be empty"]
    problems = []
    for i, request in enumerate(requests):
        if request.get("model") != f"models/{model}":
            problems.append(f"requests[{i}].model {request.get('model')!r} differs from the URL's models/{model}")
        parts = (request.get("content") or {}).get("parts")
        if not parts or not all(isinstance(p.get("text"), str) for p in parts):
            problems.append(f"requests[{i}].content needs text parts")
    return problems
