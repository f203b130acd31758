"""The dashboard's first paint with 100,000 usage records in the store, in headless Chromium.

    .venv/bin/python bench/dashboard_first_paint.py                        # SQLite and PostgreSQL, 5 rounds
    .venv/bin/python bench/dashboard_first_paint.py --backend sqlite --rows 200000 --rounds 7

Seeds ``--rows`` records spread over the 30 days before now (the mix of ``usage_timeseries_bench``) into a
temporary SQLite file and a throw-away PostgreSQL schema (``GOMODEL_TEST_PG_URL``, else the local ``test``
database), starts the gateway on each (``python -m gomodel_proxy``, admin API on, a mock provider), and loads
``/admin/dashboard/`` signed in, in a fresh browser context each round (nothing cached). Per round it reads:

- first contentful paint (the browser's own ``first-contentful-paint`` entry);
- overview ready: from navigation start until the Overview's charts are drawn (its data aggregated by the
  server over the default period, the last 24 hours);
- the server's time for each view the pages ask for (``/admin/usage/timeseries`` for 24 h, 7 d and 30 d, and
  ``/admin/usage`` grouped by model and by key over 30 d), timed from the client with the session cookie.

Prints medians (min-max) in ms. The budget is 1 s to the first paint; the views should stay under it too.
Needs Debian's ``chromium`` and the ``playwright`` dev dependency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from playwright.async_api import async_playwright
from usage_timeseries_bench import END, drop_schema, make_rows, seed

from gomodel_proxy.admin import sessions
from gomodel_proxy.storage.database import Database

ROOT = Path(__file__).resolve().parent.parent
MASTER = "sk-bench-master-0a1b2c3d"
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
VIEWS = (
    ("timeseries 24 h / hour", "usage/timeseries", {"bucket": "hour"}, timedelta(hours=24)),
    ("timeseries 7 d / hour", "usage/timeseries", {"bucket": "hour"}, timedelta(days=7)),
    ("timeseries 30 d / day", "usage/timeseries", {"bucket": "day"}, timedelta(days=30)),
    ("usage by model, 30 d", "usage", {"group_by": "model"}, timedelta(days=30)),
    ("usage by key, 30 d", "usage", {"group_by": "key"}, timedelta(days=30)),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(folder: Path, port: int, url: str, schema: str | None) -> Path:
    database = f"  url: \"{url}\"\n" + (f"  schema: {schema}\n" if schema else "")
    text = (
        f"server:\n  host: 127.0.0.1\n  port: {port}\n  master_key: {MASTER}\n  log_level: warning\n"
        "features:\n  admin_api: true\n"
        f"database:\n{database}"
        "providers:\n  mock:\n    type: mock\n    models: [m]\n"
    )
    path = folder / "config.yaml"
    path.write_text(text)
    return path


def start_gateway(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "gomodel_proxy", "--config", str(config)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_ready(url: str, proc: subprocess.Popen[bytes], within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/ready") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError("the gateway did not become ready")


async def browser_rounds(base: str, cookie: str, rounds: int, chromium: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"first contentful paint": [], "overview ready": []}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            for _ in range(rounds + 1):  # the first round warms the gateway's caches and the DB's pages
                context = await browser.new_context(viewport={"width": 1280, "height": 800})
                await context.add_cookies([{"name": sessions.COOKIE_NAME, "value": cookie, "url": base + "/admin"}])
                page = await context.new_page()
                await page.goto(base + "/admin/dashboard/")
                await page.wait_for_selector("#charts svg", timeout=30_000)
                ready = await page.evaluate("performance.now()")
                fcp = await page.evaluate(
                    "performance.getEntriesByName('first-contentful-paint').map(e => e.startTime)[0] || null")
                await context.close()
                out["first contentful paint"].append(float(fcp or "nan"))
                out["overview ready"].append(float(ready))
        finally:
            await browser.close()
    for values in out.values():
        del values[0]
    return out


async def view_rounds(base: str, cookie: str, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    end = datetime.now(UTC)
    async with aiohttp.ClientSession(cookies={sessions.COOKIE_NAME: cookie}) as http:
        for label, path, params, period in VIEWS:
            query = {**params, "start": (end - period).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "end": end.strftime("%Y-%m-%dT%H:%M:%SZ")}
            times = []
            for n in range(rounds + 1):
                began = time.perf_counter()
                async with http.get(f"{base}/admin/{path}", params=query) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{path}: HTTP {resp.status}")
                if n:
                    times.append((time.perf_counter() - began) * 1000)
            out[label] = times
    return out


def report(name: str, results: dict[str, list[float]]) -> None:
    for label, values in results.items():
        print(f"  {label:<28} {statistics.median(values):8.1f} ms  ({min(values):.1f}-{max(values):.1f})")


async def run_backend(backend: str, rows: list[dict[str, Any]], rounds: int, chromium: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="gomodel-first-paint-"))
    schema: str | None = None
    if backend == "postgresql":
        url, schema = os.environ.get("GOMODEL_TEST_PG_URL", DEFAULT_PG), f"bench_{uuid.uuid4().hex[:10]}"
    else:
        url = f"sqlite+aiosqlite:///{folder / 'usage.db'}"
    proc: subprocess.Popen[bytes] | None = None
    try:
        db = Database(url, schema=schema)
        await db.connect()
        try:
            seconds = await seed(db, rows)
        finally:
            await db.close()
        port = free_port()
        config = write_config(folder, port, url, schema)
        proc = start_gateway(config)
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base, proc)
        cookie = sessions.sign(sessions.new_session("admin", sessions.MASTER_SUBJECT), MASTER)
        print(f"\n{backend}: {len(rows):,} records seeded in {seconds:.1f} s; median of {rounds} (min-max):")
        report(backend, await browser_rounds(base, cookie, rounds, chromium))
        report(backend, await view_rounds(base, cookie, rounds))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        if schema is not None:
            await drop_schema(url, schema)
        shutil.rmtree(folder, ignore_errors=True)


def recent_rows(count: int) -> list[dict[str, Any]]:
    """``usage_timeseries_bench``'s records, moved so that they end now (the dashboard shows recent days)."""
    shift = datetime.now(UTC) - END
    rows = make_rows(count)
    for row in rows:
        row["created_at"] += shift
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("needs Debian's chromium: apt-get install -y chromium")
    rows = recent_rows(args.rows)
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        await run_backend(backend, rows, args.rounds, chromium)


if __name__ == "__main__":
    asyncio.run(main())
