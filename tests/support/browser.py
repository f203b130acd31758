"""Headless Chromium for the dashboard's browser tests: Debian's ``chromium`` driven by Playwright.

Playwright is a dev dependency and brings no browser; ``scripts/dev test`` installs Debian's ``chromium`` (as
root). Test modules set ``pytestmark = needs_chromium``: without the browser they skip, saying how to get it
(under ``CI`` they fail instead).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a dev dependency")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI"):  # in CI the browser tests must run, not skip
    raise RuntimeError("CI is set but chromium is missing: apt-get install -y chromium (scripts/dev test does as root)")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium (apt-get install -y chromium; scripts/dev test does as root)")


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A launched headless Chromium (a Playwright ``Browser``), closed on the way out."""
    async with playwright_api.async_playwright() as p:
        # --no-sandbox: the tests may run as root, where Chromium's sandbox refuses to start.
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def page_without_errors() -> AsyncIterator[Any]:
    """A page (1280x900) in a fresh Chromium; on the way out, no script error may have happened on it."""
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page
        assert errors == [], errors  # no script error on any page
