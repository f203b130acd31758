"""The dashboard behind a reverse proxy that serves the gateway under a base path (``/gw``).

A small aiohttp reverse proxy, started by the test on a loopback port, forwards ``/gw/*`` to the gateway with
the prefix stripped, streaming every answer through as it comes (the live log's server-sent events too),
every header kept (each ``Set-Cookie``), and ``X-Forwarded-Prefix: /gw`` added. Where ``nginx`` is installed,
the same is checked behind a real nginx (skipped where it is not; the aiohttp proxy always runs).

In headless Chromium: ``<proxy>/gw/admin/dashboard`` opens the sign-in page; the master key signs in and the
session cookie's path is ``/gw/admin``; every page loads with no failed request and no error answer (but the
page's own question for a session and for single sign-on before sign-in); a call made through the proxy with
the ``openai`` SDK (``base_url=<proxy>/gw/v1``) shows in the live log; the usage page's CSV link downloads
CSV; signing out ends the session. No request the page made ever left ``/gw/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gomodel_proxy.admin import sessions
from tests.e2e.test_dashboard_pages import EXPECTED_MISSES, PAGES, chat, dashboard_gateway, loaded, open_page
from tests.support.browser import chromium, needs_chromium, playwright_api
from tests.support.gateway import Gateway
from tests.support.governed import MASTER
from tests.support.oidc import free_port

NGINX = shutil.which("nginx")

pytestmark = needs_chromium

PREFIX = "/gw"
#: Headers that belong to one connection, never forwarded (RFC 9110 7.6.1), and those the proxy sets itself.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "proxy-connection"}


@pytest.fixture
async def gateway(make_gateway: Any, tmp_path: Any) -> Gateway:
    return await dashboard_gateway(make_gateway, tmp_path)


# -- the proxies -------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def aiohttp_proxy(upstream: str) -> AsyncIterator[str]:
    """``http://127.0.0.1:<port>``: ``/gw/<path>`` forwarded to ``<upstream>/<path>``, answers streamed back."""
    client = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, connect=5))

    async def forward(request: web.Request) -> web.StreamResponse:
        url = f"{upstream}/{request.match_info['tail']}"
        if request.query_string:
            url += f"?{request.query_string}"
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        headers += [("X-Forwarded-Prefix", PREFIX), ("X-Forwarded-Proto", request.scheme),
                    ("X-Forwarded-For", request.remote or "")]
        body = await request.read()
        async with client.request(request.method, url, headers=headers, data=body or None,
                                  allow_redirects=False) as upstream_resp:
            response = web.StreamResponse(status=upstream_resp.status, reason=upstream_resp.reason)
            for k, v in upstream_resp.headers.items():  # a multidict: every Set-Cookie kept
                if k.lower() not in HOP_BY_HOP:
                    response.headers.add(k, v)
            await response.prepare(request)
            try:
                async for chunk in upstream_resp.content.iter_any():  # as it comes: the live log's events
                    await response.write(chunk)
            except (ConnectionResetError, aiohttp.ClientConnectionError):
                return response  # the browser left (an event stream it closed)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_route("*", PREFIX + "/{tail:.*}", forward)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await client.close()


@contextlib.asynccontextmanager
async def nginx_proxy(upstream: str, workdir: Path) -> AsyncIterator[str]:
    """The same with nginx: ``location /gw/`` proxied to ``<upstream>/`` unbuffered (the event stream)."""
    assert NGINX is not None
    port = free_port()
    workdir.mkdir()
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location {PREFIX}/ {{
      proxy_pass {upstream}/;
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_read_timeout 1h;
      proxy_set_header Host $http_host;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-Prefix {PREFIX};
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
  }}
}}
""")
    process = subprocess.Popen([NGINX, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            if process.poll() is not None:
                raise AssertionError(f"nginx exited: {process.stderr.read().decode() if process.stderr else ''}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(params=["aiohttp", "nginx"])
async def proxy(request: Any, gateway: Gateway, tmp_path: Path) -> AsyncIterator[str]:
    upstream = gateway.url.rstrip("/")
    if request.param == "aiohttp":
        async with aiohttp_proxy(upstream) as url:
            yield url
    else:
        if NGINX is None:
            pytest.skip("nginx is not installed (optional: the aiohttp proxy is checked anyway)")
        async with nginx_proxy(upstream, tmp_path / "nginx") as url:
            yield url


# -- the browser ------------------------------------------------------------------------------------------
class Recorder:
    """Every request a page of the context made, every failed one and every error answer."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.failed: list[Any] = []
        self.errors: list[str] = []
        self.problems: list[str] = []
        self.signed_in = False

    def attach(self, context: Any) -> None:
        context.on("request", lambda r: self.requests.append(r.url))
        context.on("requestfailed", self._failed)
        context.on("response", self._response)

    def _failed(self, request: Any) -> None:
        self.failed.append(request)

    async def failures(self) -> tuple[list[str], int]:
        """The failed requests, but the live log's event stream the page closed itself when it left the page
        (Chromium reports that as ``net::ERR_ABORTED``) after it had been answered (200, an event stream);
        and how many of those there were."""
        failed, closed = [], 0
        for request in self.failed:
            response = await request.response()
            if (request.url.split("?")[0].endswith(f"{PREFIX}/admin/requests/live")
                    and request.failure == "net::ERR_ABORTED" and response is not None and response.status == 200
                    and response.headers.get("content-type", "").startswith("text/event-stream")):
                closed += 1
                continue
            failed.append(f"{request.method} {request.url}: {request.failure}")
        return failed, closed

    def _response(self, response: Any) -> None:
        if response.status < 400:
            return
        # Before sign-in the page asks for a session (401) and whether single sign-on is on (off: 404).
        if not self.signed_in and response.status in (401, 404) and response.url.endswith(EXPECTED_MISSES):
            return
        self.errors.append(f"{response.request.method} {response.url}: {response.status}")


async def test_the_dashboard_works_under_a_proxys_base_path(proxy: str, gateway: Gateway) -> None:
    expect = playwright_api.expect
    base = f"{proxy}{PREFIX}/"
    recorder = Recorder()
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        recorder.attach(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: recorder.problems.append(f"page error: {exc}"))
        page.on("console", lambda m: recorder.problems.append(f"console: {m.text}")
                if m.type == "error" and not m.text.startswith("Failed to load resource") else None)

        await page.goto(f"{proxy}{PREFIX}/admin/dashboard")
        assert page.url == f"{base}admin/dashboard/"  # the gateway's relative redirect, kept under /gw
        await page.get_by_label("API key").fill(MASTER)
        await page.wait_for_load_state("networkidle")
        recorder.signed_in = True
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
        cookie = next(c for c in await context.cookies() if c["name"] == sessions.COOKIE_NAME)
        assert cookie["path"] == f"{PREFIX}/admin", cookie
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        for name in PAGES:
            if name != "overview":
                await open_page(page, name)
            if name == "live":
                await expect(page.locator("#status")).to_contain_text("Connected", timeout=10_000)
                request_id = await chat(proxy + PREFIX, MASTER)  # streamed to the page through the proxy
                row = page.locator(f'#live-rows tr[data-request-id="{request_id}"]')
                await expect(row).to_be_visible(timeout=10_000)
                await expect(row).to_contain_text("200")
            else:
                await loaded(page)

        await open_page(page, "usage")
        await loaded(page)
        link = page.get_by_role("link", name="Export CSV")
        async with page.expect_download() as download_info:
            await link.click()
        download = await download_info.value
        assert download.url.startswith(f"{base}admin/usage?"), download.url
        text = Path(await download.path()).read_text(encoding="utf-8")
        rows = list(csv.reader(io.StringIO(text)))
        assert "requests" in rows[0] and len(rows) >= 2, rows

        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_label("API key")).to_be_visible()
        assert not [c for c in await context.cookies() if c["name"] == sessions.COOKIE_NAME]
        await page.wait_for_load_state("networkidle")
        failed, closed = await recorder.failures()

    # The favicon is a data: URL (no request leaves the browser); every other request went under /gw/.
    outside = [u for u in recorder.requests if not u.startswith(base) and not u.startswith("data:")]
    assert recorder.requests and outside == [], outside
    assert any(re.search(r"/gw/admin/requests/live", u) for u in recorder.requests)
    assert failed == [] and closed <= 1, (failed, closed)  # the page left the live log once
    assert recorder.errors == [], recorder.errors
    assert recorder.problems == [], recorder.problems
