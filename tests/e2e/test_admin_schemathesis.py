"""Schemathesis against the live admin API: what the document promises is what the server does.

Each operation gets a bounded number of generated cases (valid and invalid) sent over a real loopback
socket to the admin routes (SQLite, a fresh file), and every answer goes through schemathesis's checks:
no 5xx, documented statuses and content types, bodies matching their schemas, invalid data refused.
The server runs on its own event loop in a thread because schemathesis's client (requests) blocks.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from gomodel_proxy.admin.openapi import document
from gomodel_proxy.admin.routes import ROUTES
from gomodel_proxy.storage import repository as repo
from gomodel_proxy.storage.database import Database
from tests.e2e.test_admin_api import ADMIN_AUTH, make_app

SCHEMA = schemathesis.openapi.from_dict(document())
#: The operations ``admin.routes`` serves (what ``make_app`` registers). The document also describes routes
#: every gateway serves by other modules (``POST /admin/reload``), tested with a whole gateway instead.
_SERVED = {(method, path) for method, path, _ in ROUTES}
OPERATIONS = [op for op in (result.ok() for result in SCHEMA.get_all_operations())
              if (op.method.upper(), op.path) in _SERVED]
#: Generated cases per operation: enough to reach every branch of the validation, bounded for time.
MAX_EXAMPLES = 15


class LiveAdmin:
    """The admin routes on 127.0.0.1:<free port>, served by a loop of their own in a daemon thread."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.loop = asyncio.new_event_loop()
        self.base_url = ""
        self.changes: list[str] = []
        #: Path parameters naming records that exist, so that cases reach past the 404.
        self.known: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self._db: Database | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)

    async def _start(self) -> None:
        self._db = Database(f"sqlite+aiosqlite:///{self.db_path}")
        await self._db.connect()
        # Some records, so that generated references sometimes resolve.
        await repo.create_team(self._db, id="t1", name="Team one")
        await repo.create_user(self._db, id="u1", team_id="t1")
        key, _ = await repo.create_key(self._db, user_id="u1")
        await repo.put_budget(self._db, "global", max_budget=10, period="monthly")
        # A key and the global budget outlive the DELETE cases of teams and users (a key is only revoked).
        self.known = {
            "team_id": "t1", "user_id": "u1", "key_id": key.id, "budget_id": "global",
            "scope": "key", "subject_id": key.id,
        }
        self._runner = web.AppRunner(make_app(self._db, self.changes))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._db is not None:
            await self._db.close()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def live_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAdmin]:
    server = LiveAdmin(tmp_path_factory.mktemp("admin") / "admin.db")
    server.start()
    yield server
    server.stop()


def valid_data_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's positive_data_acceptance, except for the one 400 valid data can earn: a reference
    (team_id, user_id, a budget's subject) to a record that does not exist."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if 200 <= status < 300 or status in (401, 403, 404, 409):
        return None
    if status == 400 and response.json()["error"]["code"] == "unknown_reference":
        return None
    raise AssertionError(f"valid data refused: {status} {response.text[:300]}")


def _strategy(operation: Any, known: dict[str, str]) -> st.SearchStrategy[Any]:
    """Valid cases, invalid ones, and (for a path with ids) valid ones about records that exist."""
    strategies = [operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE)]
    names = re.findall(r"\{(\w+)\}", operation.path)
    if names:
        strategies.append(operation.as_strategy(path_parameters={name: known[name] for name in names}))
    strategies.append(operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE))
    return st.one_of(strategies)


def test_every_operation_is_covered() -> None:
    labels = {op.label for op in OPERATIONS}
    assert len(labels) == 25
    assert {"POST /admin/keys", "PUT /admin/rate-limits/{scope}/{subject_id}", "GET /admin/usage"} <= labels


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_operation_conforms(operation: Any, live_admin: LiveAdmin) -> None:
    statuses: list[int] = []

    @given(case=_strategy(operation, live_admin.known))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(base_url=live_admin.base_url, headers=ADMIN_AUTH)
        statuses.append(response.status_code)
        case.validate_response(
            response,
            headers=ADMIN_AUTH,
            excluded_checks=[positive_data_acceptance],
            additional_checks=[valid_data_accepted],
        )

    run()
    assert statuses, "no case was sent"
    assert all(status < 500 for status in statuses)
