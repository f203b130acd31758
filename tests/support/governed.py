"""A gateway with governance on: master key, admin API, a priced mock provider, a real database.

``governed_config`` gives its configuration (SQLite or PostgreSQL with a schema of its own, optionally Redis),
``sqlite_gateway`` starts one on a SQLite file; ``Admin`` drives its admin API as an operator would.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gomodel_proxy.storage.database import Database
from tests.support.gateway import Gateway

MASTER = "sk-master-9f1c2e7a5b3d"
#: The priced mock model: $1000 per million input tokens, $2000 per million output tokens, so one
#: call of a few dozen tokens costs a few cents and budgets are easy to reason about.
PRICES = {"mock/m": {"input": 1000.0, "output": 2000.0}}


def governed_config(db_url: str, *, schema: str | None = None, redis: dict[str, Any] | None = None,
                    features: dict[str, Any] | None = None, mock: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``extra`` sections of a governed gateway (see ``support.gateway.write_config``)."""
    database: dict[str, Any] = {"url": db_url}
    if schema:
        database["schema"] = schema
    out: dict[str, Any] = {
        "features": {"admin_api": True, **(features or {})},
        "database": database,
        "pricing": {"models": PRICES},
        "usage": {"flush_interval_ms": 20},
        "auth": {"refresh_s": 0.2},
    }
    if redis:
        out["redis"] = redis
    out.update(extra or {})
    return out


def mock_provider(**mock: Any) -> dict[str, dict[str, Any]]:
    return {"mock": {"type": "mock", "models": ["m", "other"],
                     "mock": {"completion_tokens": 10, **mock}}}


async def sqlite_gateway(make_gateway: Any, db_path: Any) -> Gateway:
    """A governed gateway (master key ``MASTER``, the mock provider) on the SQLite file ``db_path``."""
    gateway: Gateway = await make_gateway(providers=mock_provider(), server={"master_key": MASTER},
                                          extra=governed_config(f"sqlite+aiosqlite:///{db_path}"))
    return gateway


class Admin:
    """The admin API through the gateway's own HTTP client, with the master key."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.headers = {"Authorization": f"Bearer {MASTER}"}

    async def call(self, method: str, path: str, body: Any = None, expect: int | tuple[int, ...] = (200, 201)
                   ) -> Any:
        async with self.gateway.http.request(method, path.lstrip("/"), json=body, headers=self.headers) as resp:
            data = await resp.json(content_type=None)
            wanted = (expect,) if isinstance(expect, int) else expect
            assert resp.status in wanted, (resp.status, data)
            return data

    async def key(self, **fields: Any) -> str:
        created = await self.call("POST", "admin/keys", {"name": "test", **fields}, expect=201)
        return str(created["key"])

    async def recorded(self, requests: int, timeout: float = 10.0) -> None:
        """Wait until this month's usage records count ``requests``: the usage writer stores a request's row
        up to its flush interval after the answer, so a page read at once may not count it yet."""
        deadline = time.monotonic() + timeout
        while True:
            rows = (await self.call("GET", "admin/usage"))["data"]
            counted = sum(int(row["requests"]) for row in rows)
            if counted >= requests:
                return
            assert time.monotonic() < deadline, f"{counted} requests recorded after {timeout} s, not {requests}"
            await asyncio.sleep(0.02)


async def usage_rows(db: Database, timeout: float = 5.0, *, expect: int | None = None) -> list[dict[str, Any]]:
    """The usage_records table, waiting (up to ``timeout``) for ``expect`` rows when given."""
    from sqlalchemy import select  # noqa: PLC0415

    from gomodel_proxy.storage.tables import usage_records  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while True:
        async with db.connect_once() as conn:
            rows = [dict(r._mapping) for r in (await conn.execute(select(usage_records))).all()]
        if expect is None or len(rows) >= expect or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)
