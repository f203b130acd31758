"""The dashboard's accessibility, checked by axe-core (the standard engine) in headless Chromium.

axe-core runs the WCAG 2.0/2.1 A and AA rules on: the sign-in page (with and without the single sign-on
link), every page as an admin with data in its tables and charts (a key, a user, a team, budgets, calls
through the mock provider, the file audit on), the key-created dialog and an edit dialog open, and every page
of a read-only session, each in the light and the dark colour scheme (app.css has both). Any violation
fails the test, listed with its rule, impact, help and the nodes it found.

``scripts/dev test`` installs the npm package ``axe-core`` into ``.cache/axe-core`` (``AXE_CORE_DIR`` moves
it). Without it (or npm) the test skips saying why; under CI (``CI`` set) it fails instead.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gomodel_proxy.admin import sessions
from tests.e2e.test_dashboard_pages import PAGES, chat, dashboard_gateway, loaded, open_page, seed, sign_in
from tests.support.browser import chromium, needs_chromium, playwright_api
from tests.support.gateway import Gateway
from tests.support.governed import MASTER, Admin

pytestmark = needs_chromium

ROOT = Path(__file__).resolve().parents[2]
AXE_DIR = Path(os.environ.get("AXE_CORE_DIR", ROOT / ".cache" / "axe-core"))
AXE = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
#: The rules run: WCAG 2.0 and 2.1, levels A and AA.
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
SCHEMES = ["light", "dark"]


@functools.cache
def missing_reason() -> str | None:
    """Why axe-core cannot run here, or ``None``."""
    if AXE.is_file():
        return None
    if shutil.which("npm") is None:
        return "npm is not installed (apt-get install nodejs npm): the accessibility test needs axe-core"
    return (f"axe-core is not installed in {AXE_DIR} "
            f"(scripts/dev test installs it: npm install --prefix {AXE_DIR} axe-core@4)")


def require_axe() -> None:
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
async def gateway(make_gateway: Any, tmp_path: Any) -> Gateway:
    return await dashboard_gateway(make_gateway, tmp_path)


class Axe:
    """Chromium contexts in one colour scheme; ``check`` runs axe-core on the page and keeps what it found."""

    def __init__(self, browser: Any, scheme: str) -> None:
        self.browser = browser
        self.scheme = scheme
        self.found: list[str] = []
        self.checked: list[str] = []

    async def page(self, cookie: str | None = None) -> Any:
        # bypass_csp: the dashboard's Content-Security-Policy (script-src 'self') forbids injected scripts,
        # axe-core's among them; bypassing it here lets the test inject axe.min.js into the page.
        context = await self.browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True,
                                                 color_scheme=self.scheme, reduced_motion="reduce")
        if cookie is not None:
            await context.add_cookies([{"name": sessions.COOKIE_NAME, "value": cookie, "domain": "127.0.0.1",
                                        "path": "/admin", "httpOnly": True, "sameSite": "Strict"}])
        return await context.new_page()

    async def check(self, page: Any, what: str) -> None:
        if not await page.evaluate("() => typeof window.axe === 'object'"):
            await page.add_script_tag(path=str(AXE))
        result = await page.evaluate(
            "(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})"
            ".then((r) => r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.map((n) => ({target: n.target.join(' '), summary: n.failureSummary,"
            " html: n.html.slice(0, 200)}))})))", TAGS)
        self.checked.append(what)
        for v in result:
            nodes = "\n".join(f"      {n['target']}: {n['html']}\n        {(n['summary'] or '').replace(chr(10), ' ')}"
                              for n in v["nodes"])
            self.found.append(f"[{self.scheme}] {what}: {v['id']} ({v['impact']}) {v['help']}\n{nodes}")

    def assert_clean(self) -> None:
        assert self.checked
        assert not self.found, f"{len(self.found)} axe-core violation(s):\n" + "\n".join(self.found)


@pytest.fixture(params=SCHEMES)
async def axe(request: Any) -> AsyncIterator[Axe]:
    require_axe()
    async with chromium() as browser:
        yield Axe(browser, request.param)


async def settle(page: Any) -> None:
    """The page has loaded its data (the status says so) and its charts or tables are drawn."""
    await loaded(page)
    await page.wait_for_load_state("networkidle")


# -- the sign-in page ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("sso", [True, False], ids=["sso-link", "no-sso"])
async def test_the_sign_in_page_has_no_violation(gateway: Gateway, axe: Axe, sso: bool) -> None:
    expect = playwright_api.expect
    page = await axe.page()
    if sso:  # only the page's GET sso matters: the link it offers (route interception, as the pages test)
        await page.route("**/admin/dashboard/sso",
                         lambda route: route.fulfill(json={"enabled": True, "name": "Okta", "login_url": "sso/login"}))
    await page.goto(f"{gateway.url}/admin/dashboard/")
    await expect(page.get_by_label("API key")).to_be_visible()
    await page.wait_for_load_state("networkidle")
    await expect(page.locator("#sso-link")).to_have_count(1 if sso else 0)
    await axe.check(page, f"sign-in ({'with' if sso else 'without'} the SSO link)")
    # The error a wrong key brings is checked too (its colour on the card).
    await page.get_by_label("API key").fill("sk-gm-not-a-key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not valid")
    await axe.check(page, "sign-in with its error")
    axe.assert_clean()


# -- every page, as an admin with data ------------------------------------------------------------------------
async def with_data(gateway: Gateway) -> dict[str, str]:
    """The pages' seed (a team, a user, a key with a budget, a call), a team budget and a few more calls."""
    seeded = await seed(gateway)
    admin = Admin(gateway)
    await admin.call("PUT", "admin/budgets/team:research", {"max_budget": 100, "period": "monthly"},
                     expect=(200, 201))
    for _ in range(3):
        await chat(gateway, seeded["key"])
    return seeded


async def test_every_admin_page_and_dialog_has_no_violation(gateway: Gateway, axe: Axe) -> None:
    expect = playwright_api.expect
    seeded = await with_data(gateway)
    page = await axe.page()
    await sign_in(page, gateway)
    await expect(page.locator("#totals div", has_text="Requests").locator("dd")).to_have_text("4", timeout=10_000)
    for name in PAGES:
        if name != "overview":
            await open_page(page, name)
        if name == "live":
            await expect(page.locator("#status")).to_contain_text("Connected", timeout=10_000)
            await chat(gateway, seeded["key"])  # a row while the page is open
            await expect(page.locator("#live-rows tr").first).to_be_visible(timeout=10_000)
        else:
            await settle(page)
        if name == "audit":
            await expect(page.locator("#view tbody tr").first).to_be_visible(timeout=10_000)
            await page.locator("#view tbody tr button[aria-expanded]").first.click()  # an entry's JSON open
            await expect(page.locator("tr.entry-detail")).to_have_count(1)
        if name == "config":
            await page.locator("#view details").first.evaluate("(d) => { d.open = true; }")
        await axe.check(page, f"#{name}")

    # The key-created dialog (its secret shown once), then an edit dialog.
    await open_page(page, "keys")
    await settle(page)
    form = page.locator("#key-form")
    await form.get_by_label("Name").fill("a11y")
    await form.get_by_role("button", name="Create key").click()
    await expect(page.locator("#new-key-secret")).to_be_visible()
    await axe.check(page, "the key-created dialog")
    await page.get_by_role("button", name=re.compile("^Done")).click()
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await page.get_by_role("button", name="Edit key seeded").click()
    await expect(page.get_by_role("dialog")).to_be_visible()
    await axe.check(page, "the edit-key dialog")
    await page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    await open_page(page, "budgets")
    await settle(page)
    await page.get_by_role("button", name="Edit budget team:research").click()
    await expect(page.get_by_role("dialog")).to_be_visible()
    await axe.check(page, "the edit-budget dialog")
    axe.assert_clean()


# -- a read-only session --------------------------------------------------------------------------------------
async def test_every_read_only_page_has_no_violation(gateway: Gateway, axe: Axe) -> None:
    expect = playwright_api.expect
    await with_data(gateway)
    cookie = sessions.sign(sessions.new_session("read_only", "sso:test"), MASTER)
    page = await axe.page(cookie=cookie)
    await page.goto(f"{gateway.url}/admin/dashboard/#overview")
    await expect(page.locator("#role")).to_have_text("Read-only")
    for name in PAGES:
        if name != "overview":
            await open_page(page, name)
        if name == "live":
            await expect(page.locator("#status")).to_contain_text("Connected", timeout=10_000)
        else:
            await settle(page)
        await axe.check(page, f"#{name} (read-only)")
    axe.assert_clean()
