"""Dashboard SSO in a real browser: headless Chromium (Debian's ``chromium``, launched as
``test_dashboard_browser`` does) signs in as bob through the page's "Sign in with ..." link and the real
provider's login and consent forms (node-oidc-provider), and lands back on the dashboard signed in read-only.
Skips, saying why, without chromium or without the provider (``tests.support.oidc``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.e2e.test_dashboard_sso import CALLBACK, sso_section
from tests.support.browser import needs_chromium, page_without_errors, playwright_api
from tests.support.governed import MASTER, governed_config, mock_provider
from tests.support.oidc import OIDCProvider, free_port, require_provider

pytestmark = needs_chromium


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    async with page_without_errors() as page:
        yield page


async def test_bob_signs_in_with_sso_and_reads_only(make_gateway: Any, tmp_path: Any, page: Any) -> None:
    require_provider()
    expect = playwright_api.expect
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    gateway = await make_gateway(providers=mock_provider(), server={"master_key": MASTER}, extra=governed_config(
        f"sqlite+aiosqlite:///{tmp_path / 'sso.db'}", extra={"dashboard": {"sso": sso_section(issuer)}}))
    provider = await OIDCProvider.start(port, [gateway.url + CALLBACK])
    try:
        await page.goto(f"{gateway.url}/admin/dashboard/")
        link = page.locator("#sso-link")
        await expect(link).to_have_text("Sign in with Test IdP")
        await link.click()

        # The provider's own pages (devInteractions): any login name, any password; then consent.
        await page.wait_for_url(f"{issuer}/**")
        await page.locator("input[name=login]").fill("bob")
        await page.locator("input[name=password]").fill("any password")
        await page.locator("button[type=submit]").click()
        await page.get_by_role("button", name="Continue").click()

        await page.wait_for_url(f"{gateway.url}/admin/dashboard/**")
        await expect(page.locator("#role")).to_have_text("Read-only", timeout=10_000)
        await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        cookies = {c["name"]: c for c in await page.context.cookies(gateway.url + "/admin/dashboard/")}
        session = cookies["gomodel_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/admin"
        assert "gomodel_sso_flow" not in {c["name"] for c in await page.context.cookies(gateway.url + CALLBACK)}
        assert "#sso-error" not in page.url
    finally:
        await provider.stop()
