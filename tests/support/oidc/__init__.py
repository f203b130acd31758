"""A real OpenID provider for the SSO tests: node-oidc-provider (``provider.mjs`` beside this file).

``scripts/dev test`` installs the npm package ``oidc-provider@9`` into ``.cache/oidc-provider`` when it is
missing (``OIDC_PROVIDER_DIR`` moves it). Without node or the package, ``require_provider`` skips the test
saying why; under CI (``CI`` set) it fails instead, so the tests cannot be skipped there unnoticed.

``OIDCProvider.start(port, redirect_uris)`` runs it on ``127.0.0.1:<port>`` (the issuer
``http://127.0.0.1:<port>``), its clients registered with exactly those redirect URIs: the tests pick the port
first (the gateway's configuration names the issuer), start the gateway, then the provider with the
gateway's callback URL. ``login`` walks its devInteractions forms (login, then consent) as a browser would.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("provider.mjs")
PACKAGE_DIR = Path(os.environ.get("OIDC_PROVIDER_DIR", ROOT / ".cache" / "oidc-provider"))
MODULE = PACKAGE_DIR / "node_modules" / "oidc-provider" / "lib" / "index.js"
#: The confidential clients' secret (provider.mjs's default).
CLIENT_SECRET = "test-secret-0123456789abcdef0123456789"
_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"', re.I)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', re.I)


@functools.cache
def missing_reason() -> str | None:
    """Why the provider cannot run here, or ``None``."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed (apt-get install nodejs npm): the SSO tests need node-oidc-provider"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    major, _, minor = version.lstrip("v").partition(".")
    if not (major.isdigit() and (int(major), int(minor.partition(".")[0] or 0)) >= (20, 12)):
        return f"node {version or '(unknown version)'} is older than 20.12, which oidc-provider 9 needs"
    if not MODULE.is_file():
        return (f"oidc-provider is not installed in {PACKAGE_DIR} "
                f"(scripts/dev test installs it: npm install --prefix {PACKAGE_DIR} oidc-provider@9)")
    return None


def require_provider() -> None:
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class OIDCProvider:
    """A running node-oidc-provider process."""

    issuer: str
    process: asyncio.subprocess.Process
    stderr: list[str] = field(default_factory=list)

    @classmethod
    async def start(cls, port: int, redirect_uris: list[str], *, groups_in_id_token: bool = False) -> OIDCProvider:
        env = {**os.environ, "OIDC_PROVIDER_MODULE": str(MODULE), "OIDC_PORT": str(port),
               "OIDC_REDIRECT_URIS": ",".join(redirect_uris), "OIDC_CLIENT_SECRET": CLIENT_SECRET,
               "OIDC_GROUPS_IN_ID_TOKEN": "1" if groups_in_id_token else "0", "NODE_ENV": "test"}
        process = await asyncio.create_subprocess_exec(
            shutil.which("node") or "node", str(SCRIPT), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), 20)
        except TimeoutError:
            process.kill()
            raise AssertionError("oidc-provider did not start within 20 s") from None
        if not line:
            err = await process.stderr.read() if process.stderr is not None else b""
            raise AssertionError(f"oidc-provider exited: {err.decode(errors='replace')[-2000:]}")
        return cls(issuer=json.loads(line)["issuer"], process=process)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def login(client: aiohttp.ClientSession, authorize_url: str, user: str) -> aiohttp.ClientResponse:
    """Follow the provider from its authorization URL through the login and consent forms, as a browser
    would (cookies in ``client``'s jar), until it redirects away from itself; answers that redirect (not
    followed: the caller decides)."""
    url = URL(authorize_url)
    origin = url.origin()
    method, data = "GET", None
    for _ in range(12):
        async with client.request(method, url, data=data, allow_redirects=False) as resp:
            if resp.status in (301, 302, 303, 307, 308):
                target = url.join(URL(resp.headers["Location"]))
                if target.origin() != origin:
                    return resp
                url, method, data = target, "GET", None
                continue
            html = await resp.text()
            assert resp.status == 200, (resp.status, html[:500])
        form = _FORM.search(html)
        assert form is not None, html[:1000]
        fields: dict[str, Any] = {unescape(k): unescape(v) for k, v in _HIDDEN.findall(html)}
        if fields.get("prompt") == "login":
            fields.update(login=user, password="any")  # devInteractions: any password works
        url, method, data = url.join(URL(unescape(form.group(1)))), "POST", fields
    raise AssertionError("the provider's interaction did not end in a redirect")


@contextlib.asynccontextmanager
async def running(port: int, redirect_uris: list[str], **kw: Any) -> Any:
    provider = await OIDCProvider.start(port, redirect_uris, **kw)
    try:
        yield provider
    finally:
        await provider.stop()
