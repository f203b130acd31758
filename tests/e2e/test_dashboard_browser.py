"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

Signs in through the form (a wrong key first: the error is announced), reads the Overview, makes a call with
a virtual key through the official ``openai`` SDK, sees it counted after a refresh, reads a chart with the
keyboard, and signs out. ``scripts/dev test`` installs ``chromium`` when it is missing (as root); where it
cannot, the test skips, saying so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.support.browser import needs_chromium, page_without_errors, playwright_api
from tests.support.gateway import Gateway
from tests.support.governed import MASTER, Admin, sqlite_gateway

pytestmark = needs_chromium


@pytest.fixture
async def gateway(make_gateway: Any, tmp_path: Any) -> Gateway:
    return await sqlite_gateway(make_gateway, tmp_path / "dashboard.db")


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    async with page_without_errors() as page:
        yield page


async def test_sign_in_read_the_overview_see_a_call_and_sign_out(gateway: Gateway, page: Any) -> None:
    expect = playwright_api.expect
    await page.goto(f"{gateway.url}/admin/dashboard")
    assert page.url.endswith("/admin/dashboard/")  # the shell is under the folder: relative URLs resolve

    key_input = page.get_by_label("API key")
    await expect(key_input).to_be_visible()
    await key_input.fill("sk-gm-not-a-key")
    await key_input.press("Enter")
    await expect(page.get_by_role("alert")).to_contain_text("not valid for this gateway")

    await key_input.fill(MASTER)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    await expect(page.locator("#role")).to_contain_text("Admin")
    cookie = next(c for c in await page.context.cookies() if c["name"] == "gomodel_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"
    assert MASTER not in await page.content()  # the key is gone from the page once signed in

    key = await Admin(gateway).key(name="browser")
    client = openai.AsyncOpenAI(api_key=key, base_url=f"{gateway.url}/v1", max_retries=0)
    try:
        answer = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    finally:
        await client.close()
    assert answer.choices[0].message.content

    await Admin(gateway).recorded(1)  # stored (the writer batches): the refresh below reads it
    await page.get_by_role("button", name="Refresh").click()
    requests = page.locator("#totals div", has_text="Requests").locator("dd")
    await expect(requests).to_have_text("1", timeout=10_000)

    chart = page.get_by_role("img", name="Requests and errors")
    await chart.focus()
    await chart.press("End")
    readout = page.locator("[id$='-readout']").first
    await expect(readout).to_contain_text("Requests 1")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("API key")).to_be_visible()
    assert not [c for c in await page.context.cookies() if c["name"] == "gomodel_session"]
