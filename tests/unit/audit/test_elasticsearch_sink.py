"""The ``elasticsearch`` audit sink against a fake Bulk API.

No Elasticsearch server can run here: ``FakeElasticsearch`` is an aiohttp server on a loopback port that
implements ``POST /_bulk`` as Elastic documents it
(https://www.elastic.co/guide/en/elasticsearch/reference/current/docs-bulk.html): NDJSON action/document
line pairs ending with a newline, ``create`` failing with ``409 version_conflict_engine_exception`` when the
``_id`` exists, and the answer ``{"took", "errors", "items": [{"create": {"_index", "_id", "status", ...}}]}``;
``401 security_exception`` for a wrong API key, ``406`` for a wrong Content-Type.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from gomodel_proxy.audit.elasticsearch_sink import ElasticsearchAuditSink, ElasticsearchSinkError
from gomodel_proxy.audit.sink import AuditSink
from gomodel_proxy.config.schema import AuditConfig

API_KEY = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="


class FakeElasticsearch:
    def __init__(
        self, *, api_key: str | None = API_KEY, basic: tuple[str, str] | None = None, prefix: str = ""
    ) -> None:
        self.api_key = api_key
        self.basic = basic
        self.prefix = prefix
        self.indices: dict[str, dict[str, dict[str, Any]]] = {}
        self.requests: list[web.Request] = []
        self.bodies: list[bytes] = []
        #: "ok"; "reject" (429 es_rejected_execution_exception on odd-numbered docs of a request);
        #: "mapping" (400 document_parsing_exception on every doc); "unavailable" (HTTP 503); "hang";
        #: "not_json"; "short" (one item missing); "bad_item" (errors: true, an item without status).
        self.mode = "ok"
        self._seq = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_post(self.prefix + "/_bulk", self.bulk)
        return app

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if self.api_key is not None:
            ok = header == f"ApiKey {self.api_key}"
        elif self.basic is not None:
            ok = header == "Basic " + base64.b64encode(":".join(self.basic).encode()).decode()
        else:
            ok = not header
        if ok:
            return None
        reason = "unable to authenticate with provided credentials and anonymous access is not allowed"
        return web.json_response(
            {"error": {"root_cause": [{"type": "security_exception", "reason": reason}],
                       "type": "security_exception", "reason": reason}, "status": 401},
            status=401, headers={"WWW-Authenticate": 'ApiKey, Basic realm="security" charset="UTF-8"'})

    async def bulk(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if request.content_type != "application/x-ndjson":
            return web.json_response({"error": f"Content-Type header [{request.content_type}] is not supported",
                                      "status": 406}, status=406)
        body = await request.read()
        self.bodies.append(body)
        if self.mode == "hang":
            await asyncio.Event().wait()
        if self.mode == "unavailable":
            return web.json_response({"error": {"type": "cluster_block_exception", "reason": "blocked"},
                                      "status": 503}, status=503)
        if self.mode == "not_json":
            return web.Response(text="<html>bad gateway</html>", content_type="text/html")
        if not body.endswith(b"\n"):
            return web.json_response({"error": {"type": "illegal_argument_exception",
                                                "reason": "The bulk request must be terminated by a newline [\\n]"},
                                      "status": 400}, status=400)
        lines = body.split(b"\n")[:-1]
        assert len(lines) % 2 == 0
        items = [self._create(orjson.loads(lines[i]), orjson.loads(lines[i + 1]), i // 2)
                 for i in range(0, len(lines), 2)]
        if self.mode == "short":
            items = items[:-1]
        if self.mode == "bad_item":
            items[0] = {"create": {"_index": "x"}}
        errors = any("error" in next(iter(item.values())) for item in items) or self.mode == "bad_item"
        return web.json_response({"took": 3, "errors": errors, "items": items})

    def _create(self, action: dict[str, Any], doc: dict[str, Any], position: int) -> dict[str, Any]:
        ((op, meta),) = action.items()
        assert op == "create"
        index = meta["_index"]
        doc_id = meta.get("_id") or uuid.uuid4().hex
        docs = self.indices.setdefault(index, {})
        head = {"_index": index, "_id": doc_id}
        if self.mode == "mapping":
            return {op: head | {"status": 400, "error": {
                "type": "document_parsing_exception",
                "reason": "[1:15] failed to parse field [latency_ms] of type [long] in document with id 'x'"}}}
        if self.mode == "reject" and position % 2 == 1:
            return {op: head | {"status": 429, "error": {
                "type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"}}}
        if doc_id in docs:
            return {op: head | {"status": 409, "error": {
                "type": "version_conflict_engine_exception",
                "reason": f"[{doc_id}]: version conflict, document already exists (current version [1])",
                "index_uuid": "aAsFqTI0Tc2W0LCWgPNrOA", "shard": "0", "index": index}}}
        docs[doc_id] = doc
        self._seq += 1
        return {op: head | {"_version": 1, "result": "created", "_shards": {"total": 2, "successful": 1, "failed": 0},
                            "_seq_no": self._seq, "_primary_term": 1, "status": 201}}


MakeFake = Callable[..., Awaitable[tuple[FakeElasticsearch, str]]]


@pytest.fixture
def make_fake(aiohttp_server: Any) -> MakeFake:
    async def make(**kwargs: Any) -> tuple[FakeElasticsearch, str]:
        fake = FakeElasticsearch(**kwargs)
        server = await aiohttp_server(fake.app())
        return fake, f"http://127.0.0.1:{server.port}"

    return make


def entry(i: int) -> dict[str, Any]:
    return {"id": f"e-{i}", "request_id": f"req-{i}", "step": "guardrails", "decision": "allow", "latency_ms": i,
            "meta": {"model": "up/gpt", "tags": ["a", "b"]}}


async def write(sink: ElasticsearchAuditSink, entries: list[dict[str, Any]]) -> None:
    try:
        await sink.write(entries)
    finally:
        await sink.close()


async def test_batch_is_indexed_with_ids(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    sink = ElasticsearchAuditSink(url=url, index="audit-entries", api_key=API_KEY, timeout_s=2)
    as_protocol: AuditSink = sink
    assert as_protocol.name == "elasticsearch"
    await sink.start()
    await write(sink, [entry(i) for i in range(4)])
    assert fake.indices["audit-entries"] == {f"e-{i}": entry(i) for i in range(4)}
    (request,) = fake.requests
    assert request.path == "/_bulk"
    assert request.headers["Content-Type"] == "application/x-ndjson"
    assert request.headers["Authorization"] == f"ApiKey {API_KEY}"
    lines = fake.bodies[0].split(b"\n")
    assert orjson.loads(lines[0]) == {"create": {"_index": "audit-entries", "_id": "e-0"}}
    assert orjson.loads(lines[1]) == entry(0)
    assert lines[-1] == b""


async def test_replayed_batch_with_existing_ids_passes(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    sink = ElasticsearchAuditSink(url=url, api_key=API_KEY)
    try:
        await sink.write([entry(1), entry(2)])
        await sink.write([entry(1), entry(2), entry(3)])  # 409, 409, 201
    finally:
        await sink.close()
    assert sorted(fake.indices["gomodel_audit"]) == ["e-1", "e-2", "e-3"]


async def test_entry_without_id_lets_the_server_choose(make_fake: MakeFake) -> None:
    fake, url = await make_fake(api_key=None)
    await write(ElasticsearchAuditSink(url=url), [{"step": "x"}, {"id": 7, "step": "y"}])
    lines = fake.bodies[0].split(b"\n")
    assert orjson.loads(lines[0]) == {"create": {"_index": "gomodel_audit"}}
    assert orjson.loads(lines[2]) == {"create": {"_index": "gomodel_audit", "_id": "7"}}
    assert "Authorization" not in fake.requests[0].headers
    assert len(fake.indices["gomodel_audit"]) == 2


async def test_other_item_errors_raise(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    sink = ElasticsearchAuditSink(url=url, api_key=API_KEY)
    try:
        await sink.write([entry(1)])
        fake.mode = "reject"
        # e-1 is there (409: fine), e-2 is rejected (429): the batch must be given again.
        with pytest.raises(ElasticsearchSinkError, match="1 of 3 entries not written to gomodel_audit: status 429 "
                                                         "es_rejected_execution_exception: rejected execution"):
            await sink.write([entry(1), entry(2), entry(3)])
        fake.mode = "mapping"
        with pytest.raises(ElasticsearchSinkError, match=r"2 of 2 .* status 400 document_parsing_exception"):
            await sink.write([entry(5), entry(6)])
        fake.mode = "ok"
        await sink.write([entry(1), entry(2), entry(3)])  # the replay goes through
    finally:
        await sink.close()
    assert sorted(fake.indices["gomodel_audit"]) == ["e-1", "e-2", "e-3"]


async def test_http_errors_raise(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    fake.mode = "unavailable"
    with pytest.raises(ElasticsearchSinkError, match=r"HTTP 503: .*cluster_block_exception"):
        await write(ElasticsearchAuditSink(url=url, api_key=API_KEY), [entry(1)])


async def test_wrong_api_key_raises_without_showing_it(make_fake: MakeFake) -> None:
    _, url = await make_fake()
    wrong = "d3Jvbmcta2V5LWlkOndyb25nLXNlY3JldA=="
    with pytest.raises(ElasticsearchSinkError, match=r"HTTP 401: .*security_exception") as info:
        await write(ElasticsearchAuditSink(url=url, api_key=wrong), [entry(1)])
    assert wrong not in str(info.value)


async def test_malformed_answers_raise(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    for mode, pattern in (("not_json", "unexpected bulk answer: <html>"), ("short", "1 items for 2 entries"),
                          ("bad_item", "unexpected bulk answer")):
        fake.mode = mode
        with pytest.raises(ElasticsearchSinkError, match=pattern):
            await write(ElasticsearchAuditSink(url=url, api_key=API_KEY), [entry(1), entry(2)])
        fake.indices.clear()


async def test_an_item_error_without_details_still_raises(aiohttp_server: Any) -> None:
    async def bulk(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"took": 1, "errors": True, "items": [
            {"create": {"_index": "i", "_id": "e-1", "status": 409, "error": "version conflict"}}]})

    app = web.Application()
    app.router.add_post("/_bulk", bulk)
    server = await aiohttp_server(app)
    with pytest.raises(ElasticsearchSinkError, match="1 of 1 entries not written to i: status 409 version conflict"):
        await write(ElasticsearchAuditSink(url=f"http://127.0.0.1:{server.port}", index="i"), [entry(1)])


async def test_basic_auth_and_path_prefix_from_the_url(make_fake: MakeFake) -> None:
    fake, url = await make_fake(api_key=None, basic=("elastic", "p@ss:word"), prefix="/es")
    sink = ElasticsearchAuditSink(url=url.replace("http://", "http://elastic:p%40ss%3Aword@") + "/es/?x=1")
    await write(sink, [entry(1)])
    assert fake.requests[0].path == "/es/_bulk"
    assert list(fake.indices["gomodel_audit"]) == ["e-1"]


async def test_api_key_wins_over_url_credentials(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    await write(ElasticsearchAuditSink(url=url.replace("http://", "http://u:p@"), api_key=API_KEY), [entry(1)])
    assert fake.requests[0].headers["Authorization"] == f"ApiKey {API_KEY}"


async def test_large_batches_are_split(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    batch = [entry(i) | {"pad": "x" * 400} for i in range(10)]
    await write(ElasticsearchAuditSink(url=url, api_key=API_KEY, max_request_bytes=1500), batch)
    assert [body.count(b"\n") // 2 for body in fake.bodies] == [2, 2, 2, 2, 2]  # ~600 bytes an entry
    assert all(len(body) <= 1500 for body in fake.bodies)
    assert sorted(fake.indices["gomodel_audit"]) == sorted(e["id"] for e in batch)


async def test_an_entry_larger_than_the_limit_goes_alone(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    batch = [entry(1), entry(2) | {"pad": "x" * 3000}, entry(3)]
    await write(ElasticsearchAuditSink(url=url, api_key=API_KEY, max_request_bytes=1000), batch)
    assert [body.count(b"\n") // 2 for body in fake.bodies] == [1, 1, 1]
    assert len(fake.indices["gomodel_audit"]) == 3


async def test_server_down_raises(make_fake: MakeFake) -> None:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = ElasticsearchAuditSink(url=f"http://elastic:hunter2@127.0.0.1:{port}", api_key=API_KEY, timeout_s=1)
    started = time.monotonic()
    with pytest.raises(ElasticsearchSinkError, match="bulk request of 1 entries failed: ClientConnectorError") as info:
        await write(sink, [entry(1)])
    assert time.monotonic() - started < 1
    assert API_KEY not in str(info.value) and "hunter2" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_stuck_server_raises_within_timeout(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    fake.mode = "hang"
    started = time.monotonic()
    with pytest.raises(ElasticsearchSinkError, match=r"failed: .*Timeout"):
        await write(ElasticsearchAuditSink(url=url, api_key=API_KEY, timeout_s=0.3), [entry(1)])
    assert time.monotonic() - started < 0.3 + 1


async def test_empty_batch_sends_nothing(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    await write(ElasticsearchAuditSink(url=url), [])
    assert fake.requests == []


async def test_from_config(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    config = AuditConfig(backend="elasticsearch", url=url, api_key=API_KEY, index="trail", timeout_s=1.5)
    sink = ElasticsearchAuditSink.from_config(config)
    assert (sink.index, sink.timeout_s) == ("trail", 1.5)
    await write(sink, [entry(1)])
    assert list(fake.indices["trail"]) == ["e-1"]


async def test_close_is_idempotent() -> None:
    sink = ElasticsearchAuditSink(url="http://127.0.0.1:9200")
    await sink.close()
    await sink.start()
    await sink.start()
    await sink.close()
    await sink.close()


@pytest.mark.parametrize("url", ["", "127.0.0.1:9200", "ftp://host/", "/relative"])
def test_url_must_be_http(url: str) -> None:
    with pytest.raises(ValueError, match=r"audit\.url"):
        ElasticsearchAuditSink(url=url)
