"""The OpenAI mock upstream with the Responses API: ``POST /v1/responses`` (scenarios by model, like chat),
``GET``/``DELETE /v1/responses/{id}`` (answered from the scenario registered as ``"GET <id>"`` /
``"DELETE <id>"``; OpenAI's 404 when none is).

Recorded Responses streams stored as data payloads only (``.chunks.jsonl``) get their ``event:`` lines
back (:func:`responses_stream_body`), as OpenAI sends them.
"""

from __future__ import annotations

import json

from aiohttp import web

from .fixtures import Fixture
from .mock_upstream import MockUpstream, Scenario


def responses_stream_body(fx: Fixture) -> bytes:
    """The SSE bytes OpenAI sent for a Responses stream recording: SSE as is; payload lines with their
    ``event: <type>`` line (no ``[DONE]``: the Responses API does not send one)."""
    if fx.kind == "sse":
        return fx.raw
    out = []
    for line in fx.raw.splitlines():
        if line.strip():
            out.append(b"event: " + json.loads(line)["type"].encode() + b"\ndata: " + line + b"\n\n")
    return b"".join(out)


def responses_scenario(fx: Fixture, **overrides: object) -> Scenario:
    scenario = Scenario.from_fixture(fx, **overrides)
    if fx.is_stream:
        scenario.body = responses_stream_body(fx)
    return scenario


class ResponsesMock(MockUpstream):
    """The shared OpenAI-compatible mock plus the Responses routes."""

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_post("/v1/responses", self._answer)
        app.router.add_get("/v1/responses/{response_id}", self._stored)
        app.router.add_delete("/v1/responses/{response_id}", self._stored)

    def on_stored(self, method: str, response_id: str, scenario: Scenario) -> Scenario:
        return self.on(f"{method} {response_id}", scenario)

    async def _stored(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        try:
            response_id = request.match_info["response_id"]
            scenario = self.scenarios.get(f"{request.method} {response_id}")
            if scenario is None:
                return web.json_response({"error": {
                    "message": f"Response with id '{response_id}' not found.", "type": "invalid_request_error",
                    "param": None, "code": None}}, status=404)
            return await self._respond(request, scenario, rec)
        finally:
            rec.done.set()
