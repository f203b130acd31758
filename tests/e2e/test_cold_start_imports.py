"""Start-up of the production configuration imports no SQLAlchemy once the database is at the current schema.

A real ``python -X importtime -m gomodel_proxy`` process (virtual keys, admin API, usage records, budgets, rate
limits, file audit, the PII guardrail, Redis when reachable) on SQLite and on PostgreSQL: the first start
creates the schema (through SQLAlchemy: a first start is not the steady state); the second one must reach
``/ready``, authenticate a key made by the first, serve, bill and seed its budget, without ``sqlalchemy``
among its imports. The first admin request then loads it (and works).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.http_sync import HTTPError, get, post
from tests.support.services import drop_schema, find_pg, find_redis, pg_schema, pg_unreachable, redis_prefix

ROOT = Path(__file__).resolve().parents[2]
MASTER = "sk-master-cold-start-0123456789"
RAILS = ("guardrails:\n  - name: pii-redactor\n    enabled: true\n    priority: 10\n"
         "    config: {detect: [email, phone, ssn, credit_card, iban, ip], action: redact, restore: true, "
         "scan_output: false}\n")
CHAT = {"model": "demo/mock-chat", "messages": [{"role": "user", "content": "hello, mail me at a@example.com"}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, database: str, redis: str) -> Path:
    rails = tmp_path / "guardrails.yaml"
    rails.write_text(RAILS)
    path = tmp_path / "config.yaml"
    path.write_text(
        "server:\n  host: 127.0.0.1\n  log_level: warning\n  log_format: json\n  shutdown_grace_s: 1\n"
        f"  master_key: {MASTER}\n"
        "features:\n  admin_api: true\n  usage_tracking: true\n  audit_logging: true\n"
        "providers:\n  demo:\n    type: mock\n"
        f"cache:\n  dir: {tmp_path / 'cache'}\n"
        "usage:\n  flush_interval_ms: 20\n"
        "pricing:\n  models:\n    mock/mock-chat: {input: 1.0, output: 2.0}\n"
        f"{database}{redis}"
        f"audit:\n  backend: file\n  path: {tmp_path / 'audit' / 'audit.jsonl'}\n"
        f"guardrails:\n  file: {rails}\n"
    )
    return path


class Process:
    def __init__(self, config: Path, stderr: Path) -> None:
        self.base = f"http://127.0.0.1:{_free_port()}"
        self.stderr_path = stderr
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GOMODEL", "COVERAGE_PROCESS"))}
        with stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-X", "importtime", "-m", "gomodel_proxy", "--config", str(config),
                 "--port", self.base.rsplit(":", 1)[1]],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited early:\n{self.stderr()[-3000:]}")
            try:
                if get(self.base + "/ready", timeout=1).status == 200:
                    return
            except HTTPError:
                pass
            time.sleep(0.02)
        self.stop()
        raise AssertionError("gateway not ready in time")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def imported(self) -> set[str]:
        """The modules imported so far (``-X importtime`` writes a line per module as it is imported, but
        not for the one ``importlib.import_module`` names, nor its parent packages: look for submodules)."""
        out = set()
        for line in self.stderr().splitlines():
            if line.startswith("import time:") and line.count("|") == 2:
                out.add(line.rsplit("|", 1)[1].strip())
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _admin(method: str, base: str, path: str, body: object = None) -> object:
    headers = {"Authorization": f"Bearer {MASTER}"}
    reply = post(base + path, body, headers=headers) if method == "POST" else get(base + path, headers=headers)
    assert reply.status in (200, 201), reply.text
    return reply.json()


def _sqlalchemy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m == "sqlalchemy" or m.startswith("sqlalchemy."))


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    if request.param == "sqlite":
        yield f"database:\n  url: sqlite+aiosqlite:///{tmp_path / 'db' / 'gomodel.db'}\n"
        return
    url = asyncio.run(find_pg())
    if url is None:
        pytest.skip(pg_unreachable())
    schema = pg_schema()
    yield f"database:\n  url: {url}\n  schema: {schema}\n"
    asyncio.run(drop_schema(url, schema))


def test_a_start_on_an_up_to_date_database_imports_no_sqlalchemy(tmp_path: Path, database: str) -> None:
    redis_url = asyncio.run(find_redis())
    redis = f"redis:\n  url: {redis_url}\n  key_prefix: '{redis_prefix()}'\n" if redis_url else ""
    config = _config(tmp_path, database, redis)

    first = Process(config, tmp_path / "first.err")  # creates the schema
    try:
        made = _admin("POST", first.base, "/admin/keys", {"name": "cold", "max_budget": 50.0})
        assert isinstance(made, dict)
        key = made["key"]
    finally:
        first.stop()

    gateway = Process(config, tmp_path / "second.err")
    try:
        at_ready = gateway.imported()
        driver = "asyncpg" if "postgresql" in database else "sqlite3"
        assert "gomodel_proxy.storage.database" in at_ready and driver in at_ready
        assert _sqlalchemy(at_ready) == [], "start-up imported SQLAlchemy"
        headers = {"Authorization": f"Bearer {key}"}
        assert get(gateway.base + "/v1/models", headers=headers).status == 200  # the key, read raw
        assert get(gateway.base + "/v1/models", headers={"Authorization": "Bearer sk-gm-nope"}).status == 401
        reply = post(gateway.base + "/v1/chat/completions", CHAT, headers=headers)  # rate limit, budget seed
        assert reply.status == 200, reply.text
        if "postgresql" in database:  # the usage writer's COPY is asyncpg's; SQLite's batches are SQLAlchemy's
            time.sleep(0.3)
            assert _sqlalchemy(gateway.imported()) == [], "serving a request imported SQLAlchemy"

        keys = _admin("GET", gateway.base, "/admin/keys")  # the first admin request loads it, and works
        assert isinstance(keys, dict)
        assert [k["name"] for k in keys["data"]] == ["cold"]
        assert "sqlalchemy.engine" in _sqlalchemy(gateway.imported())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            usage = _admin("GET", gateway.base, "/admin/usage/records?start=2000-01-01T00:00:00Z")
            assert isinstance(usage, dict)
            if usage["data"]:
                break
            time.sleep(0.05)
        assert len(usage["data"]) == 1
    finally:
        gateway.stop()
