"""The audit trail end to end: the gateway (openai SDK, raw HTTP) in front of mock providers, entries in a
real file or a real PostgreSQL, read back through ``GET /admin/audit``; sinks that stall or are down under
concurrent load (a TCP proxy in front of PostgreSQL), and the drain at SIGTERM (a real process)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gomodel_proxy.audit.pipeline import AuditLogger
from tests.support.gateway import CLIENT_KEY, UPSTREAM_KEY, Gateway, provider_config
from tests.support.governed import MASTER, Admin
from tests.support.processes import GatewayProcess
from tests.support.services import find_pg, pg_schema, pg_unreachable
from tests.support.tcp_proxy import TcpProxy

from .helpers import MESSAGES
from .test_resilience import FAST_RETRY, KeyedMock, error

MakeGateway = Callable[..., Awaitable[Gateway]]
PROMPT_SECRET = "sk-proj-PROMPTSECRET0123456789"
GEMINI_KEY = "AIzaSyA-0123456789abcdefghijklmnopqrs"
MOCK = {"mock": {"type": "mock", "models": ["m", "other"], "mock": {"completion_tokens": 5}}}


def audit_of(gateway: Gateway) -> AuditLogger:
    audit = gateway.state.governance.audit
    assert isinstance(audit, AuditLogger)
    return audit


def read_entries(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not reached in time: {what}")
        await asyncio.sleep(0.05)


# -- what an entry holds ----------------------------------------------------------------------------
async def test_an_entry_per_request_and_per_attempt_and_no_secret_in_the_file(make_gateway: MakeGateway,
                                                                             tmp_path: Path) -> None:
    mock = KeyedMock()
    await mock.start()
    path = tmp_path / "audit.jsonl"
    gateway = await make_gateway(
        providers={"up": provider_config(mock.base_url, models=["m"], retry={**FAST_RETRY, "max_attempts": 2})},
        extra={"features": {"audit_logging": True}, "audit": {"backend": "file", "path": str(path)}})
    gateway._closers.append(mock.close)
    mock.queue = [error(503)]  # the first attempt fails, the retry answers
    client = gateway.openai()
    reply = await asyncio.to_thread(lambda: client.chat.completions.create(
        model="up/m", messages=MESSAGES, extra_headers={"X-Request-ID": "audit-retry"}))
    assert reply.choices[0].message.content == "hi"
    await gateway.server.close()  # drains the trail
    entries = [e for e in read_entries(path) if e["request_id"] == "audit-retry"]
    (req,) = [e for e in entries if e["kind"] == "request"]
    attempts = sorted((e for e in entries if e["kind"] == "attempt"), key=lambda e: e["attempt"])
    assert (req["endpoint"], req["model_requested"], req["provider"], req["model"]) == (
        "chat.completions", "up/m", "up", "m")
    assert (req["status"], req["outcome"], req["stream"], req["attempts"]) == (200, "ok", False, 2)
    assert req["latency_ms"] > 0 and 0 < req["ttfb_ms"] <= req["latency_ms"]
    assert req["usage"]["input_tokens"] == 5 and req["usage"]["output_tokens"] == 2
    assert req["principal"] == "anonymous" and req["key_id"] is None
    assert [(a["provider"], a["status"]) for a in attempts] == [("up", 503), ("up", 200)]
    assert attempts[0]["provider_key"] and attempts[0]["provider_key"] not in UPSTREAM_KEY
    assert all(a["id"].startswith(req["id"] + ".") for a in attempts)
    text = path.read_text()
    assert UPSTREAM_KEY not in text and CLIENT_KEY not in text


async def test_bodies_when_enabled_a_stream_reassembled_and_secrets_scrubbed(make_gateway: MakeGateway,
                                                                            tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    gateway = await make_gateway(providers=MOCK, extra={
        "features": {"audit_logging": True},
        "audit": {"backend": "file", "path": str(path), "include_bodies": True, "max_body_kb": 64}})
    client = gateway.async_openai()
    messages = [{"role": "user", "content": f"my key is {PROMPT_SECRET}, and ?key={GEMINI_KEY}"}]
    whole = await client.chat.completions.create(model="mock/m", messages=messages,  # type: ignore[arg-type]
                                                 extra_headers={"X-Request-ID": "b-whole"})
    stream = await client.chat.completions.create(model="mock/m", messages=MESSAGES,  # type: ignore[arg-type]
                                                  stream=True, extra_headers={"X-Request-ID": "b-stream"})
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    await gateway.close_clients()
    await gateway.server.close()
    got = {e["request_id"]: e for e in read_entries(path) if e["kind"] == "request"}
    plain, streamed = got["b-whole"], got["b-stream"]
    assert json.loads(plain["response_body"])["choices"][0]["message"]["content"] == whole.choices[0].message.content
    assert "my key is [REDACTED]" in plain["request_body"] and '"model":"mock/m"' in plain["request_body"]
    raw = path.read_text()
    assert PROMPT_SECRET not in raw and GEMINI_KEY not in raw and CLIENT_KEY not in raw
    assert streamed["stream"] is True and json.loads(streamed["request_body"])["stream"] is True
    events = [line[6:] for line in streamed["response_body"].splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    content = "".join((json.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
                      for e in events[:-1])
    assert content == text and text


async def test_bodies_are_off_by_default(make_gateway: MakeGateway, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    gateway = await make_gateway(providers=MOCK, extra={
        "features": {"audit_logging": True}, "audit": {"backend": "file", "path": str(path)}})
    async with gateway.http.post("v1/chat/completions", json={"model": "mock/m", "messages": MESSAGES}) as r:
        assert r.status == 200
    assert gateway.records[-1].audit is None and not gateway.records[-1].stream_filters
    await gateway.server.close()
    (entry,) = read_entries(path)
    assert "request_body" not in entry and "response_body" not in entry


# -- GET /admin/audit -------------------------------------------------------------------------------
@pytest.mark.parametrize("store", ["file", "postgres"])
async def test_admin_audit_filters_and_pages(store: str, make_gateway: MakeGateway, tmp_path: Path,
                                             pg: tuple[str, str]) -> None:
    url, schema = pg
    audit: dict[str, Any] = {"backend": store, "flush_interval_ms": 10}
    if store == "file":
        audit["path"] = str(tmp_path / "audit.jsonl")
    gateway = await make_gateway(providers=MOCK, server={"master_key": MASTER}, extra={
        "features": {"audit_logging": True, "admin_api": True},
        "database": {"url": url, "schema": schema}, "audit": audit})
    admin = Admin(gateway)
    key = await admin.key(name="audited")
    key_id = (await admin.call("GET", "admin/keys"))["data"][0]["id"]
    sent: dict[str, tuple[str, str]] = {}
    for i in range(12):
        model = "mock/m" if i % 3 else "mock/other"
        auth = key if i % 2 else MASTER
        rid = f"q-{i:02d}"
        async with gateway.http.post("v1/chat/completions", json={"model": model, "messages": MESSAGES},
                                     headers={"Authorization": f"Bearer {auth}", "X-Request-ID": rid}) as r:
            assert r.status == 200
        sent[rid] = (model, auth)
    async with gateway.http.post("v1/chat/completions", json={"model": "nope/x", "messages": MESSAGES},
                                 headers={"Authorization": f"Bearer {MASTER}", "X-Request-ID": "q-bad"}) as r:
        assert r.status in (400, 404)
        bad_status = r.status

    async def listed(query: str) -> dict[str, Any]:
        data: dict[str, Any] = await admin.call("GET", f"admin/audit?{query}")
        return data

    async def all_in() -> bool:
        # Wait for these 13 by id: the admin calls are requests too, so a count alone is reached early.
        ids = {e["request_id"] for e in (await listed("kind=request&limit=1000"))["data"]}
        return {*sent, "q-bad"} <= ids

    await until(all_in, what="the 13 request entries")
    everything = (await listed("kind=request&limit=1000"))["data"]
    assert sorted(e["request_id"] for e in everything if e["request_id"].startswith("q-")) == sorted(
        [*sent, "q-bad"])
    assert [e["ts"] for e in everything] == sorted((e["ts"] for e in everything), reverse=True)
    mine = (await listed(f"key_id={key_id}&limit=100"))["data"]
    assert sorted(e["request_id"] for e in mine) == sorted(r for r, (_, a) in sent.items() if a == key)
    assert all(e["key_id"] == key_id for e in mine)
    other = (await listed("model=mock/other"))["data"]
    assert sorted(e["request_id"] for e in other) == sorted(r for r, (m, _) in sent.items() if m == "mock/other")
    assert [e["request_id"] for e in (await listed(f"status={bad_status}"))["data"]] == ["q-bad"]
    # Pages of 5 by cursor: every entry once, newest first.
    # (Filtered on a model: the admin calls of this test are requests too, and keep coming.)
    seen: list[str] = []
    page = await listed("kind=request&model=mock/m&limit=3")
    while True:
        seen.extend(e["id"] for e in page["data"])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        page = await listed(f"kind=request&model=mock/m&limit=3&cursor={page['next_cursor']}")
    assert seen == [e["id"] for e in everything if e["model_requested"] == "mock/m"] and len(seen) == 8
    # Time window: start inclusive, end exclusive.
    middle = everything[len(everything) // 2]
    newer = (await listed(f"kind=request&limit=1000&start={_rfc3339(middle['ts'] - 0.001)}"))["data"]
    assert middle["id"] in {e["id"] for e in newer} and all(e["ts"] >= middle["ts"] - 0.001 for e in newer)
    older = (await listed(f"kind=request&limit=1000&end={_rfc3339(middle['ts'] - 0.001)}"))["data"]
    assert {e["id"] for e in older} | {e["id"] for e in newer} >= {e["id"] for e in everything}
    assert not {e["id"] for e in older} & {e["id"] for e in newer}
    assert (await listed("start=2000-01-01&end=2000-01-02"))["data"] == []
    # Refusals: a plain key, a bad cursor, an unknown parameter, a bad status.
    async with gateway.http.get("admin/audit", headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status == 403
    for query, param in (("cursor=bm9wZQ", "cursor"), ("colour=red", "colour"), ("status=abc", "status"),
                         ("limit=0", "limit")):
        body = await admin.call("GET", f"admin/audit?{query}", expect=400)
        assert body["error"]["param"] == param, (query, body)
    await gateway.server.close()
    if store == "file":
        text = (tmp_path / "audit.jsonl").read_text()
        assert MASTER not in text and key not in text


def _rfc3339(ts: float) -> str:
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_admin_audit_says_when_the_store_cannot_be_read(make_gateway: MakeGateway, tmp_path: Path) -> None:
    gateway = await make_gateway(providers=MOCK, server={"master_key": MASTER},
                                 extra={"features": {"admin_api": True}})
    body = await Admin(gateway).call("GET", "admin/audit", expect=404)
    assert "audit.backend: noop" in body["error"]["message"]


# -- sinks that stall or are down under load ------------------------------------------------------
async def load(gateway: Gateway, prefix: str, total: int = 400, concurrency: int = 40) -> list[str]:
    """``total`` chat requests, ``concurrency`` at a time; every one must succeed. Their request ids."""
    ids = [f"{prefix}-{i:04d}" for i in range(total)]
    queue = list(ids)

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            rid = queue.pop()
            async with session.post(gateway.v1 + "/chat/completions", headers={"X-Request-ID": rid},
                                    json={"model": "mock/m", "messages": MESSAGES}) as r:
                assert r.status == 200, await r.text()
                await r.read()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ids


async def pg_request_ids(url: str, table: str) -> set[str]:
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        rows = await conn.fetch(f'SELECT request_id FROM "{table}" WHERE kind = \'request\'')
    except asyncpg.UndefinedTableError:
        return set()
    finally:
        await conn.close()
    return {r["request_id"] for r in rows}


def pg_sink_extra(url: str, port: int, table: str, tmp_path: Path, **audit: Any) -> dict[str, Any]:
    """A gateway auditing into PostgreSQL through ``port`` (the proxy), table ``table``; nothing else uses it."""
    user_db = url.split("://", 1)[1]
    return {
        "features": {"audit_logging": True, "usage_tracking": False},
        "audit": {"backend": "postgres", "url": f"postgresql+asyncpg://{user_db.split('@')[0]}@127.0.0.1:{port}/"
                  f"{user_db.rsplit('/', 1)[1]}", "index": table, "timeout_s": 0.5, "flush_interval_ms": 20,
                  "batch_size": 50, "spill_dir": str(tmp_path / "spill"), **audit},
    }


@pytest.fixture
async def pg_table() -> AsyncIterator[tuple[str, str]]:
    """PostgreSQL's URL and a table name of this test's own (dropped afterwards)."""
    import asyncpg  # noqa: PLC0415

    url = await find_pg()
    if url is None:
        pytest.skip(pg_unreachable())
    table = f"audit_{pg_schema()}"
    yield url, table
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    finally:
        await conn.close()


def pg_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


async def test_a_sink_stalling_for_10_s_under_load_slows_no_request_and_loses_no_entry(
        make_gateway: MakeGateway, tmp_path: Path, pg_table: tuple[str, str]) -> None:
    url, table = pg_table
    async with TcpProxy("127.0.0.1", pg_port(url)) as proxy:
        gateway = await make_gateway(providers=MOCK, extra=pg_sink_extra(url, proxy.port, table, tmp_path))
        audit = audit_of(gateway)
        before = await load(gateway, "warm", total=40)
        await until(lambda: _has(url, table, before), what="warm-up entries in PostgreSQL")
        proxy.pause()  # PostgreSQL hangs: connections open, nothing passes
        stalled_at = asyncio.get_running_loop().time()
        ids = await load(gateway, "stall")
        # Every request of the run was answered while the sink was still hung: none waited for it.
        assert not proxy._flowing.is_set()
        await until(lambda: _true(audit.spilled > 0), what="entries spilled while the sink hangs")
        await asyncio.sleep(max(0.0, 10.0 - (asyncio.get_running_loop().time() - stalled_at)))
        proxy.resume()
        await until(lambda: _has(url, table, ids), timeout=60, what="every entry replayed into PostgreSQL")
        assert audit.dropped == 0 and audit.replayed > 0
        await gateway.server.close()


async def test_a_sink_down_for_the_whole_run_loses_no_entry(make_gateway: MakeGateway, tmp_path: Path,
                                                           pg_table: tuple[str, str]) -> None:
    url, table = pg_table
    proxy = TcpProxy("127.0.0.1", pg_port(url))
    await proxy.start()
    await proxy.stop()  # its port is known, nothing listens there: PostgreSQL is down from the start
    try:
        gateway = await make_gateway(providers=MOCK, extra=pg_sink_extra(url, proxy.port, table, tmp_path))
        audit = audit_of(gateway)
        ids = await load(gateway, "down")
        await until(lambda: _true(audit.spilled >= len(ids)), what="every entry spilled")
        assert audit.written == 0 and audit.dropped == 0
        metrics = await gateway.metrics_text()  # the spill is visible in /metrics
        assert f'gomodel_audit_entries_total{{state="spilled"}} {float(audit.spilled)}' in metrics
        assert 'gomodel_audit_entries_total{state="written"} 0.0' in metrics
        await gateway.server.close()  # shut down while the sink is still down: the spill files stay
        assert list((tmp_path / "spill").glob("audit-spill-postgres-*"))
        # The next gateway (same spill_dir) finds PostgreSQL back and replays every entry.
        await proxy.start()
        gateway = await make_gateway(providers=MOCK, extra=pg_sink_extra(url, proxy.port, table, tmp_path))
        await until(lambda: _has(url, table, ids), timeout=60, what="every entry replayed into PostgreSQL")
        await until(lambda: _true(not list((tmp_path / "spill").glob("audit-spill-*"))), what="spill files gone")
        await gateway.server.close()
    finally:
        await proxy.close()


async def _true(value: bool) -> bool:
    return value


async def _has(url: str, table: str, ids: list[str]) -> bool:
    return set(ids) <= await pg_request_ids(url, table)


# -- SIGTERM --------------------------------------------------------------------------------------
async def test_sigterm_drains_the_queue_into_the_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({
        "server": {"host": "127.0.0.1", "log_format": "json"},
        "providers": {"mock": {"type": "mock", "mock": {"completion_tokens": 3}}},
        "cache": {"dir": str(tmp_path / "cache")},
        "features": {"audit_logging": True},
        # Nothing is written before shutdown: a flush interval far longer than the test.
        "audit": {"backend": "file", "path": str(path), "flush_interval_ms": 600000, "batch_size": 100000},
    }))
    gw = GatewayProcess(config, log_path=tmp_path / "gw.log")
    try:
        await gw.wait_ready()
        async with aiohttp.ClientSession() as session:
            for i in range(25):
                async with session.post(gw.base + "/v1/chat/completions", headers={"X-Request-ID": f"term-{i}"},
                                        json={"model": "mock/m", "messages": MESSAGES}) as r:
                    assert r.status == 200
        assert not path.exists() or path.read_bytes() == b""
        assert await gw.stop() == 0
    finally:
        gw.kill()
    got = sorted(e["request_id"] for e in read_entries(path) if e["kind"] == "request")
    assert got == sorted(f"term-{i}" for i in range(25))
    assert not [e for e in gw.log_events() if str(e.get("event", "")).startswith("audit")]  # nothing lost
