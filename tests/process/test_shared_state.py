"""Shared state across real gateway processes: Redis-backed rate limits and budgets, PostgreSQL usage records.

Every test starts real ``python -m gomodel_proxy`` processes (``support.processes``) on a PostgreSQL
schema of its own (and a Redis key prefix of its own where Redis is shared), and stops them with SIGTERM
as an operator would. The database "goes down" by stopping a ``TcpProxy`` the gateway reaches it through.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import orjson
import pytest

from tests.support.gateway import write_config
from tests.support.governed import MASTER, governed_config, mock_provider
from tests.support.processes import GatewayProcess
from tests.support.services import drop_schema, find_pg, pg_schema, pg_unreachable
from tests.support.tcp_proxy import TcpProxy

MESSAGES = [{"role": "user", "content": "Say hello."}]
#: ``usage.flush_interval_ms`` of the SIGTERM tests: longer than any of them runs, so no flush happens
#: before the signal and every record is in flight when it arrives.
SLOW_FLUSH_MS = 60_000
#: The priced mock model (governed_config): $1000 per million input tokens, $2000 per million output.
IN_PRICE = Decimal("0.001")
OUT_PRICE = Decimal("0.002")


# -- fixtures and helpers -----------------------------------------------------------------------------
class PG:
    """This test's schema on the test PostgreSQL: the gateway's URL and a direct reader."""

    def __init__(self, url: str, schema: str) -> None:
        self.url = url  # postgresql+asyncpg://...
        self.schema = schema
        self.dsn = url.replace("+asyncpg", "")
        host_port = self.dsn.split("@", 1)[1].split("/", 1)[0]
        self.host, _, port = host_port.partition(":")
        self.port = int(port or 5432)

    def via(self, port: int) -> str:
        """The gateway's database URL through a ``TcpProxy`` listening on ``port``."""
        return self.url.replace(f"{self.host}:{self.port}", f"127.0.0.1:{port}")

    async def rows(self, where: str = "", *args: Any) -> list[dict[str, Any]]:
        conn = await asyncpg.connect(self.dsn, timeout=5)
        try:
            exists = await conn.fetchval("SELECT to_regclass($1)", f'"{self.schema}".usage_records')
            if exists is None:
                return []
            records = await conn.fetch(f'SELECT * FROM "{self.schema}".usage_records {where}', *args)
        finally:
            await conn.close()
        return [dict(r) for r in records]

    async def wait_rows(self, expect: int, *args: Any, timeout: float = 10.0, where: str = ""
                        ) -> list[dict[str, Any]]:
        """The rows, polled until at least ``expect`` are there (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.rows(where, *args)
            if len(rows) >= expect or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.1)


@pytest.fixture
async def pg() -> AsyncIterator[PG]:
    url = await find_pg()
    if url is None:
        pytest.skip(pg_unreachable())
    db = PG(url, pg_schema())
    yield db
    await drop_schema(url, db.schema)


Launch = Callable[..., GatewayProcess]


@pytest.fixture
async def launch(pg: PG, tmp_path: Path) -> AsyncIterator[Launch]:
    """Start a gateway process: ``launch(db_url=..., redis=..., usage=...)``; killed at the end if still up.

    Depends on ``pg`` so that the processes are gone before the schema is dropped.
    """
    started: list[GatewayProcess] = []

    def start(*, db_url: str | None = None, redis: dict[str, Any] | None = None,
              usage: dict[str, Any] | None = None, name: str | None = None) -> GatewayProcess:
        folder = tmp_path / (name or f"gw-{len(started)}")
        folder.mkdir(exist_ok=True)
        extra = governed_config(db_url or pg.url, schema=pg.schema, redis=redis,
                                extra={"usage": {"flush_interval_ms": 20, "spool_dir": str(tmp_path / "spool"),
                                                 **(usage or {})}})
        config = write_config(folder, mock_provider(), extra=extra,
                              server={"master_key": MASTER, "log_format": "json", "shutdown_grace_s": 5})
        gw = GatewayProcess(config, log_path=folder / "gateway.log")
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.kill()


def shared_redis(url: str, prefix: str) -> dict[str, Any]:
    """The ``redis`` section, with the default timeout: a burst must not read as Redis being down (which,
    with ``on_failure: open``, would let requests through unlimited; see ``assert_redis_stayed_up``)."""
    return {"url": url, "key_prefix": prefix}


def assert_redis_stayed_up(*gateways: GatewayProcess) -> None:
    """No process fell back to its Redis failure policy (which would void an exactness claim)."""
    for gw in gateways:
        events = [e for e in gw.log_events() if e.get("event") == "redis unreachable"]
        assert not events, f"process {gw.pid} failed open: {events}"


def spool_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "spool"
    return sorted(folder.glob("usage-spool-*")) if folder.exists() else []


def chat_body(**extra: Any) -> bytes:
    return orjson.dumps({"model": "mock/m", "messages": MESSAGES, **extra})


async def create_key(http: aiohttp.ClientSession, gw: GatewayProcess, **fields: Any) -> dict[str, Any]:
    async with http.post(gw.base + "/admin/keys", json={"name": "test", **fields},
                         headers={"Authorization": f"Bearer {MASTER}"}) as resp:
        data = await resp.json()
        assert resp.status == 201, data
        return dict(data)


async def chat(http: aiohttp.ClientSession, gw: GatewayProcess, key: str, request_id: str, body: bytes
               ) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bearer {key}", "X-Request-ID": request_id, "Content-Type": "application/json"}
    async with http.post(gw.base + "/v1/chat/completions", data=body, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


def session(limit: int = 400) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit),
                                 timeout=aiohttp.ClientTimeout(total=30))


async def settled(http: aiohttp.ClientSession, gw: GatewayProcess, key: str) -> dict[str, Any]:
    """The key's budget once no reservation is held (settlements run in the background after a call)."""
    deadline = time.monotonic() + 10
    while True:
        async with http.get(gw.base + "/v1/usage", headers={"Authorization": f"Bearer {key}"}) as resp:
            assert resp.status == 200
            budget = dict((await resp.json())["budgets"][0])
        if budget["reserved"] == 0 or time.monotonic() > deadline:
            assert budget["reserved"] == 0, budget
            return budget
        await asyncio.sleep(0.05)


async def warm(http: aiohttp.ClientSession, gateways: list[GatewayProcess], n: int) -> None:
    """Open ``n`` keep-alive connections (spread over ``gateways``) before a burst, so that the burst
    measures the gateways, not TCP handshakes queueing in a listen backlog."""
    async def one(i: int) -> None:
        async with http.get(gateways[i % len(gateways)].base + "/health") as resp:
            assert resp.status == 200
    await asyncio.gather(*(one(i) for i in range(n)))


def one_each(rows: list[dict[str, Any]], ids: list[str]) -> dict[str, dict[str, Any]]:
    """Assert ``rows`` hold exactly one record per id of ``ids`` (and nothing else); them by request id."""
    seen: dict[str, dict[str, Any]] = {}
    dupes = []
    for row in rows:
        if row["request_id"] in seen:
            dupes.append(row["request_id"])
        seen[row["request_id"]] = row
    assert not dupes, f"request ids recorded twice: {dupes[:10]}"
    missing = sorted(set(ids) - set(seen))
    assert not missing, f"{len(missing)} requests have no usage record: {missing[:10]}"
    assert len(rows) == len(ids), f"{len(rows) - len(ids)} records of requests never made"
    return seen


# -- 1. RPM exact across two processes ------------------------------------------------------------
async def test_two_processes_share_one_rpm_bucket_exactly(
    redis_url: str, redis_key_prefix: str, pg: PG, launch: Launch, tmp_path: Path,
) -> None:
    redis = shared_redis(redis_url, redis_key_prefix)
    a = launch(redis=redis)
    await a.wait_ready()  # migrates the schema
    async with session() as http:
        created = await create_key(http, a, rpm=100)
        key = created["key"]
        b = launch(redis=redis)  # started after the key exists: its first cache load holds it
        await b.wait_ready()
        gateways = [a, b]
        await warm(http, gateways, 300)

        ids = [f"rpm-{i:03d}" for i in range(300)]
        body = chat_body()
        started = time.monotonic()
        results = await asyncio.gather(*(chat(http, gateways[i % 2], key, rid, body) for i, rid in enumerate(ids)))
        elapsed = time.monotonic() - started

    allowed = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] != 200]
    assert_redis_stayed_up(a, b)
    print(f"\nRPM burst: 300 requests over 2 processes in {elapsed:.3f} s: {len(allowed)} x 200, "
          f"{len(refused)} x 429")
    # The bucket holds 100 and refills one every 0.6 s: over the burst at most floor(elapsed/0.6) more.
    # Both processes draw on the one bucket in Redis: each alone would have let 100 of its 150 through.
    assert 100 <= len(allowed) <= 100 + math.floor(elapsed / 0.6), (elapsed, len(allowed))
    if elapsed < 0.6:
        assert len(allowed) == 100
    assert {r[0] for r in refused} == {429}
    assert len(allowed) + len(refused) == 300
    for _, headers, data in refused:
        assert int(headers["Retry-After"]) >= 1
        assert headers["x-ratelimit-limit-requests"] == "100"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert "x-ratelimit-reset-requests" in headers
        assert data["error"]["type"] == "rate_limit_error" and data["error"]["code"] == "rate_limit_exceeded"
    for _, headers, data in allowed:
        assert headers["x-ratelimit-limit-requests"] == "100"
        assert data["usage"]["completion_tokens"] == 10

    assert await a.stop() == 0, a.log_text()
    assert await b.stop() == 0, b.log_text()
    assert_redis_stayed_up(a, b)
    rows = await pg.rows()
    by_id = one_each(rows, ids)
    statuses = [row["status"] for row in by_id.values()]
    assert statuses.count(200) == len(allowed) and statuses.count(429) == len(refused)
    assert all(row["key_id"] == created["id"] for row in rows)
    assert spool_files(tmp_path) == []


# -- 2. A budget is never exceeded across two processes ------------------------------------------------
async def test_a_budget_is_never_exceeded_across_two_processes(
    redis_url: str, redis_key_prefix: str, pg: PG, launch: Launch,
) -> None:
    n = 10
    redis = shared_redis(redis_url, redis_key_prefix)
    a = launch(redis=redis)
    await a.wait_ready()
    body = chat_body(max_tokens=10)
    async with session() as http:
        # Calibration: the cost of one such call, through a key without a budget.
        probe = await create_key(http, a)
        status, _, _ = await chat(http, a, probe["key"], "budget-calibration", body)
        assert status == 200
        calibration = await pg.wait_rows(1, "budget-calibration", where="WHERE request_id = $1")
        assert len(calibration) == 1 and calibration[0]["output_tokens"] == 10
        actual = Decimal(str(calibration[0]["cost"]))
        expected = calibration[0]["input_tokens"] * IN_PRICE + 10 * OUT_PRICE
        assert actual == expected
        # What the Budget step reserves before the call: body bytes / 4 + 1 input tokens, max_tokens output.
        worst = (len(body) // 4 + 1) * IN_PRICE + 10 * OUT_PRICE
        assert actual < worst < 2 * actual, (actual, worst)  # the bounds below rely on it
        max_budget = n * actual

        budgeted = await create_key(http, a, max_budget=float(max_budget), budget_period="total")
        key = budgeted["key"]
        b = launch(redis=redis)  # its first cache load holds the key and its budget
        await b.wait_ready()
        gateways = [a, b]
        await warm(http, gateways, 4 * n)
        ids = [f"budget-{i:03d}" for i in range(4 * n)]
        results = await asyncio.gather(*(chat(http, gateways[i % 2], key, rid, body) for i, rid in enumerate(ids)))
        burst_ok = sum(1 for r in results if r[0] == 200)
        assert_redis_stayed_up(a, b)
        for status, _, data in results:
            if status != 200:
                assert status == 429 and data["error"]["code"] == "budget_exceeded", (status, data)
        print(f"\nbudget burst: {4 * n} requests, {burst_ok} x 200 (budget {n} calls' worth: "
              f"${max_budget}; one call ${actual}, reserved ${worst})")
        # Never more than the budget holds, whatever the interleaving of the two processes...
        assert burst_ok <= n
        # ...and never fewer than the worst-case reservations fit: a refusal means spent + reserved +
        # worst > max, and each admitted call holds at most `worst`.
        assert burst_ok >= math.floor(max_budget / worst)

        # Then one at a time (each settled before the next): calls pass while the rest of the budget
        # holds a worst case, so all but at most one of the n calls' worth get through.
        budget = await settled(http, a, key)
        assert Decimal(str(budget["spent"])) == burst_ok * actual
        admitted = burst_ok
        more = []
        for i in range(2 * n):
            await settled(http, gateways[i % 2], key)
            rid = f"budget-seq-{i:03d}"
            status, _, data = await chat(http, gateways[i % 2], key, rid, body)
            more.append(rid)
            if status != 200:
                assert status == 429 and data["error"]["code"] == "budget_exceeded", (status, data)
                break
            admitted += 1
        else:
            raise AssertionError("the budget never refused")
        ids += more
    print(f"budget total: {admitted} calls admitted of {n} calls' worth")
    # The last refusal came with everything settled: max - admitted * actual < worst < 2 * actual.
    assert n - 1 <= admitted <= n

    assert await a.stop() == 0, a.log_text()
    assert await b.stop() == 0, b.log_text()
    assert_redis_stayed_up(a, b)
    rows = await pg.rows("WHERE key_id = $1", budgeted["id"])
    by_id = one_each(rows, ids)
    spent = sum(Decimal(str(row["cost"])) for row in by_id.values())
    assert spent <= max_budget
    assert spent == admitted * actual
    assert sum(1 for row in rows if row["status"] == 200) == admitted


# -- 3. The database goes down mid-load and comes back --------------------------------------------------
async def test_the_database_going_down_mid_load_fails_no_request_and_loses_no_record(
    pg: PG, launch: Launch, tmp_path: Path,
) -> None:
    proxy = TcpProxy(pg.host, pg.port)
    await proxy.start()
    try:
        gw = launch(db_url=pg.via(proxy.port))
        await gw.wait_ready()
        async with session(100) as http:
            key = (await create_key(http, gw))["key"]
            results: list[tuple[str, int]] = []
            stop_at = time.monotonic() + 3.0
            body = chat_body(max_tokens=5)

            async def worker(w: int) -> None:
                i = 0
                while time.monotonic() < stop_at:
                    rid = f"load-{w:02d}-{i:04d}"
                    i += 1
                    try:
                        status, _, _ = await chat(http, gw, key, rid, body)
                    except aiohttp.ClientError as exc:
                        status = -1
                        print(rid, exc)
                    results.append((rid, status))

            async def outage() -> None:
                await asyncio.sleep(0.75)
                await proxy.stop()
                await asyncio.sleep(1.5)
                await proxy.start()

            await asyncio.gather(outage(), *(worker(w) for w in range(20)))

        failed = [r for r in results if r[1] != 200]
        assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
        ids = [rid for rid, _ in results]
        rows = await pg.wait_rows(len(ids), timeout=15)
        print(f"\ndatabase outage: {len(ids)} requests, {len(rows)} records")
        one_each(rows, ids)
        events = [e.get("event") for e in gw.log_events()]
        assert "usage_database_down" in events
        assert "usage_database_back" in events
        assert "usage_spool_replayed" in events
        closed_wait = [e for e in gw.log_events() if e.get("event") == "usage_spool_replayed"]
        print(f"spool replays: {[e.get('rows') for e in closed_wait]}")
        assert await gw.stop() == 0, gw.log_text()
        assert spool_files(tmp_path) == []
        assert len(await pg.rows()) == len(ids)  # shutdown wrote nothing twice
    finally:
        await proxy.stop()


# -- 4. SIGTERM with records in flight ---------------------------------------------------------------
async def test_sigterm_flushes_records_still_waiting_for_the_flush_interval(pg: PG, launch: Launch) -> None:
    n = 25
    # A flush interval no test outlives: every record is still in memory when SIGTERM arrives.
    gw = launch(usage={"flush_interval_ms": SLOW_FLUSH_MS})
    await gw.wait_ready()
    async with session(50) as http:
        ids = [f"term-{i:02d}" for i in range(n)]
        results = await asyncio.gather(*(chat(http, gw, MASTER, rid, chat_body()) for rid in ids))
    assert [r[0] for r in results] == [200] * n
    assert await pg.rows() == [], "records were written before SIGTERM: nothing was in flight"
    assert await gw.stop() == 0, gw.log_text()
    one_each(await pg.rows(), ids)
    closed = [e for e in gw.log_events() if e.get("event") == "usage_writer_closed"]
    assert len(closed) == 1 and closed[0]["written"] == n and closed[0]["spooled"] == 0, closed


async def test_sigterm_with_the_database_down_spools_and_the_next_process_replays(
    pg: PG, launch: Launch, tmp_path: Path,
) -> None:
    n = 25
    proxy = TcpProxy(pg.host, pg.port)
    await proxy.start()
    try:
        gw = launch(db_url=pg.via(proxy.port), usage={"flush_interval_ms": SLOW_FLUSH_MS})
        await gw.wait_ready()
        async with session(50) as http:
            ids = [f"spool-{i:02d}" for i in range(n)]
            results = await asyncio.gather(*(chat(http, gw, MASTER, rid, chat_body()) for rid in ids))
        assert [r[0] for r in results] == [200] * n
        await proxy.stop()  # the database is unreachable from here on
        assert await gw.stop() == 0, gw.log_text()
    finally:
        await proxy.stop()
    assert await pg.rows() == []
    closed = [e for e in gw.log_events() if e.get("event") == "usage_writer_closed"]
    assert len(closed) == 1 and closed[0]["spooled"] == n and closed[0]["written"] == 0, closed
    spooled = spool_files(tmp_path)
    assert [p.name for p in spooled] == [f"usage-spool-{gw.pid}.jsonl"]
    lines = [orjson.loads(line) for line in spooled[0].read_bytes().splitlines() if line.strip()]
    assert sorted(row["request_id"] for row in lines) == sorted(ids)

    # A new process on the reachable database takes the dead process's spool file and replays it.
    replayer = launch(name="replayer")
    await replayer.wait_ready()
    rows = await pg.wait_rows(n, timeout=10)
    one_each(rows, ids)
    deadline = time.monotonic() + 5
    while spool_files(tmp_path) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert spool_files(tmp_path) == []
    assert await replayer.stop() == 0, replayer.log_text()
    assert len(await pg.rows()) == n
