"""Screenshots of the operators' dashboard for the README and the docs, in headless Chromium.

    .venv/bin/python scripts/dashboard_screenshots.py            # writes docs/dashboard/*.png
    .venv/bin/python scripts/dashboard_screenshots.py --out /tmp/shots --dark

Starts a gateway in-process (the tests' helpers: SQLite in a temporary folder, the master key, a file audit
trail) in front of three providers of real types, ``openai``, ``anthropic`` and ``groq``, whose ``base_url``
points at upstreams on loopback speaking those wire formats (``tests/support``'s mock servers). Each provider
has several fake keys (only their fingerprints may show) and a circuit breaker. During the run one OpenAI key
is answered 429 with a long ``retry-after`` (it rests), one Anthropic key spends its TPM budget of the
gateway's own (it is at its limit), and Groq's upstream answers 503 until its breaker opens.

Then it creates teams, users, keys and budgets through the admin API, writes a few hundred realistic usage
records spread over the last 7 days, makes real calls with the openai SDK (so the Live log and the audit
trail have something), signs in through the page with the master key, and saves a 1280x800 PNG of Overview,
Usage, Keys, Providers, Live, Budgets, Audit and Config. Needs Debian's ``chromium`` and the ``playwright``
dev dependency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402
from aiohttp import web  # noqa: E402
from playwright.async_api import async_playwright  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from gomodel_proxy.storage.tables import usage_records  # noqa: E402
from tests.support.gateway import Gateway, start_gateway, write_config  # noqa: E402
from tests.support.governed import MASTER, Admin, governed_config  # noqa: E402
from tests.support.mock_anthropic import MockAnthropic, message_request_problems  # noqa: E402
from tests.support.mock_upstream import MockUpstream, Scenario  # noqa: E402

#: The pages shot: file name, hash, what to wait for once there.
SHOTS = [
    ("overview", "overview", "#charts svg"),
    ("usage", "usage", "#usage-rows tr"),
    ("keys", "keys", "button[data-key-id]"),
    ("providers", "providers", "#view table .badge"),
    ("live", "live", "#live-rows tr[data-request-id]"),
    ("budgets", "budgets", "#view meter"),
    ("audit", "audit", "#view table tbody tr"),
    ("config", "config", "#view .config .tree"),
]
#: (provider, model, $ per million input tokens, $ per million output tokens)
MODELS = [
    ("openai", "gpt-4o", 2.5, 10.0), ("openai", "gpt-4o-mini", 0.15, 0.6),
    ("anthropic", "claude-3-5-haiku", 0.8, 4.0), ("anthropic", "claude-sonnet-4", 3.0, 15.0),
    ("groq", "llama-3.3-70b-versatile", 0.59, 0.79),
]

#: The providers' fake keys (``sk-demo-...``): the dashboard must only ever show their fingerprints.
OPENAI_KEYS = ["sk-demo-openai-prod-4f9a1c7e2b", "sk-demo-openai-prod-8d3e6b0a5c", "sk-demo-openai-batch-1a2b3c4d5e"]
ANTHROPIC_KEYS = ["sk-ant-demo-api03-7c1d9e4f2a", "sk-ant-demo-api03-0b8a6f3e1d", "sk-ant-demo-api03-5e2c7a9b4f"]
GROQ_KEYS = ["gsk_demo_3f8e1a6c9d2b7e4a", "gsk_demo_9a4c2e7f1b8d3c6e"]
#: The OpenAI key its upstream answers 429 (retry-after 15 minutes), and the Anthropic key with a TPM budget.
THROTTLED_KEY = OPENAI_KEYS[1]
TPM_KEY = ANTHROPIC_KEYS[2]


def models_of() -> dict[str, list[str]]:
    """Each provider's models."""
    out: dict[str, list[str]] = {}
    for provider, model, _, _ in MODELS:
        out.setdefault(provider, []).append(model)
    return out


# -- the upstreams ----------------------------------------------------------------------------------------
def _usage(rnd: random.Random) -> tuple[int, int]:
    return rnd.randrange(600, 1800), rnd.randrange(60, 400)


def _timing(rnd: random.Random) -> dict[str, float]:
    """A provider's think time before the first byte, and between streamed pieces."""
    return {"delay_before_headers": rnd.uniform(0.15, 0.5), "chunk_delay": 0.03}


class OpenAIUpstream(MockUpstream):
    """OpenAI's chat completions (streamed or not) for any model; 429 for ``throttled`` keys, 503 while
    ``outage`` calls are left."""

    def __init__(self, models: list[str], *, throttled: str | None = None, outage: int = 0) -> None:
        super().__init__(model_ids=models)
        self.throttled = throttled
        self.outage = outage
        self.rnd = random.Random(11)  # noqa: S311 - sample data for the pictures

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        try:
            body = rec.json if isinstance(rec.json, dict) else {}
            if self.outage > 0:
                self.outage -= 1
                scenario = Scenario.error(503, {"error": {"message": "The server is overloaded.",
                                                          "type": "server_error", "code": "overloaded"}})
            elif rec.headers.get("Authorization") == f"Bearer {self.throttled}":
                scenario = Scenario.error(429, {"error": {
                    "message": "Rate limit reached for requests per minute.", "type": "requests",
                    "code": "rate_limit_exceeded"}}, headers={"retry-after": "900"})
            else:
                scenario = self.completion(str(body.get("model")), bool(body.get("stream")))
            return await self._respond(request, scenario, rec)
        finally:
            rec.done.set()

    def completion(self, model: str, stream: bool) -> Scenario:
        tokens_in, tokens_out = _usage(self.rnd)
        usage = {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": 1764300000, "model": model}
        text = "The customer reports a billing error; refund issued and ticket closed."
        if not stream:
            return Scenario(body=json.dumps({
                **base, "object": "chat.completion", "usage": usage,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}]}).encode(), **_timing(self.rnd))
        chunk = {**base, "object": "chat.completion.chunk"}
        events: list[dict[str, Any] | str] = [
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
        events += [{**chunk, "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]}
                   for word in text.split()]
        events += [{**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                   {**chunk, "choices": [], "usage": usage}, "[DONE]"]
        return Scenario.sse(events, **_timing(self.rnd))


class AnthropicUpstream(MockAnthropic):
    """Anthropic's messages API (streamed or not) for any model, checking requests as Anthropic would."""

    def __init__(self, models: list[str], keys: list[str]) -> None:
        super().__init__(api_keys=tuple(keys), model_ids=models)
        self.rnd = random.Random(13)  # noqa: S311 - sample data for the pictures

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record_anthropic(request)
        try:
            body = rec.json if isinstance(rec.json, dict) else {}
            rec.problems.extend(message_request_problems(rec.json))
            if rec.problems:
                return web.json_response({"type": "error", "error": {
                    "type": "invalid_request_error", "message": "; ".join(rec.problems)}}, status=400)
            return await self._respond(request, self.message(str(body.get("model")), bool(body.get("stream"))), rec)
        finally:
            rec.done.set()

    def message(self, model: str, stream: bool) -> Scenario:
        tokens_in, tokens_out = _usage(self.rnd)
        text = "Summary: the customer cannot sign in after the password reset; escalated to tier 2."
        message = {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model,
                   "stop_reason": "end_turn", "stop_sequence": None}
        if not stream:
            return Scenario(body=json.dumps({
                **message, "content": [{"type": "text", "text": text}],
                "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out}}).encode(), **_timing(self.rnd))
        events = [("message_start", {"type": "message_start", "message": {
            **message, "content": [], "stop_reason": None, "usage": {"input_tokens": tokens_in, "output_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}})]
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": word + " "}})
                   for word in text.split()]
        events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                                         "stop_sequence": None},
                                      "usage": {"output_tokens": tokens_out}}),
                   ("message_stop", {"type": "message_stop"})]
        raw = b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)
        return Scenario.sse([raw], **_timing(self.rnd))


def providers(openai_up: OpenAIUpstream, anthropic_up: AnthropicUpstream, groq_up: OpenAIUpstream) -> dict[str, Any]:
    """The providers as an operator would configure them, each at its loopback upstream."""
    models = models_of()
    breaker = {"failure_threshold": 3, "window_s": 60, "cooldown_s": 600}
    return {
        "openai": {"type": "openai", "base_url": openai_up.base_url, "models": models["openai"],
                   "key_strategy": "weighted", "circuit_breaker": breaker,
                   "api_keys": [{"key": OPENAI_KEYS[0], "weight": 3, "rpm": 500},
                                {"key": OPENAI_KEYS[1], "weight": 2, "rpm": 500},
                                {"key": OPENAI_KEYS[2], "weight": 1}]},
        "anthropic": {"type": "anthropic", "base_url": anthropic_up.base_url, "models": models["anthropic"],
                      "circuit_breaker": breaker,
                      "api_keys": [ANTHROPIC_KEYS[0], ANTHROPIC_KEYS[1], {"key": TPM_KEY, "tpm": 1000}]},
        "groq": {"type": "groq", "base_url": groq_up.base_url, "models": models["groq"],
                 "circuit_breaker": breaker, "retry": {"max_attempts": 2, "backoff_base_ms": 50},
                 "api_keys": GROQ_KEYS},
    }


# -- the data -----------------------------------------------------------------------------------------------
async def seed_records(gateway: Gateway, keys: list[dict[str, Any]], count: int) -> None:
    """``count`` usage records over the last 7 days, busier in working hours, 3% errors."""
    rnd = random.Random(7)  # noqa: S311 - sample data for the pictures
    now = datetime.now(UTC)
    rows = []
    while len(rows) < count:
        at = now - timedelta(seconds=rnd.uniform(60, 7 * 86400))
        if not 7 <= at.hour <= 19 and rnd.random() < 0.7:
            continue  # quieter at night
        provider, model, price_in, price_out = rnd.choices(MODELS, weights=[3, 6, 2, 1, 2])[0]
        key = rnd.choices(keys, weights=[5, 3, 2, 1, 1][:len(keys)])[0]
        failed = rnd.random() < 0.03
        tokens_in, tokens_out = rnd.randrange(200, 6000), 0 if failed else rnd.randrange(20, 900)
        stream = rnd.random() < 0.4
        latency = rnd.lognormvariate(6.6, 0.5)
        rows.append({
            "id": uuid.uuid4().hex, "request_id": uuid.uuid4().hex[:24], "created_at": at,
            "key_id": key["id"], "user_id": key["user_id"], "team_id": key["team_id"], "provider": provider,
            "model_requested": model, "model": model, "endpoint": "/v1/chat/completions",
            "status": rnd.choice([429, 500, 503]) if failed else 200, "stream": stream,
            "input_tokens": tokens_in, "output_tokens": tokens_out,
            "cost": 0.0 if failed else round((tokens_in * price_in + tokens_out * price_out) / 1e6, 9),
            "latency_ms": round(latency, 3), "ttfb_ms": round(latency * rnd.uniform(0.15, 0.4), 3) if stream else None,
            "outcome": "upstream_error" if failed else "ok",
        })
    db = gateway.state.governance.db
    assert db is not None
    async with db.begin() as conn:
        await conn.execute(insert(usage_records), rows)


async def seed(gateway: Gateway) -> list[str]:
    """Teams, users, keys and budgets through the admin API, and usage records."""
    admin = Admin(gateway)
    for team_id, name in (("research", "Research"), ("support", "Customer support")):
        await admin.call("POST", "admin/teams", {"id": team_id, "name": name, "rpm": 600}, expect=201)
    users = [("ada", "Ada Lovelace", "research"), ("grace", "Grace Hopper", "research"),
             ("linus", "Linus Pauling", "support"), ("mary", "Mary Somerville", "support")]
    for user_id, name, team in users:
        await admin.call("POST", "admin/users", {"id": user_id, "name": name, "team_id": team,
                                                 "email": f"{user_id}@example.com"}, expect=201)
    specs = [
        {"name": "research-notebooks", "user_id": "ada", "team_id": "research", "rpm": 120, "tpm": 200_000,
         "max_budget": 25, "budget_period": "monthly"},
        {"name": "support-bot", "user_id": "linus", "team_id": "support", "rpm": 300,
         "allowed_models": ["gpt-4o-mini", "anthropic/*", "groq/*"], "max_budget": 5, "budget_period": "daily"},
        {"name": "eval-harness", "user_id": "grace", "team_id": "research", "tpm": 500_000,
         "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat()},
        {"name": "batch-summaries", "user_id": "mary", "team_id": "support", "allowed_models": ["gpt-4o-mini"]},
        {"name": "ops-admin", "is_admin": True},
    ]
    keys, secrets = [], []
    for spec in specs:
        created = await admin.call("POST", "admin/keys", spec, expect=201)
        keys.append(created)
        secrets.append(created["key"])
    await admin.call("PUT", "admin/budgets/team:research", {"max_budget": 40, "period": "weekly"})
    await admin.call("PUT", "admin/budgets/global", {"max_budget": 500, "period": "monthly"})
    await seed_records(gateway, keys[:4], 400)
    return secrets


async def call(gateway: Gateway, secret: str, model: str, *, stream: bool, prompt: str) -> None:
    """One chat completion through the openai SDK; an error answer is part of the picture."""
    client = openai.AsyncOpenAI(api_key=secret, base_url=f"{gateway.url}/v1", max_retries=0)
    try:
        messages: list[Any] = [{"role": "user", "content": prompt}]
        if stream:
            async for _ in await client.chat.completions.create(model=model, messages=messages, stream=True):
                pass
        else:
            await client.chat.completions.create(model=model, messages=messages)
    except openai.APIError:
        pass
    finally:
        await client.close()


async def traffic(gateway: Gateway, secrets: list[str], calls: int) -> None:
    """Real calls (some streamed; a key not allowed a model gets its 403, Groq its 503)."""
    for i in range(calls):
        await call(gateway, secrets[i % 3], MODELS[i % len(MODELS)][1], stream=bool(i % 2),
                   prompt=f"Summarise ticket {4100 + i}")
        await asyncio.sleep(0.05)


async def incident(gateway: Gateway, secrets: list[str]) -> None:
    """What the Providers page is about: Groq's upstream down until its breaker opens, the OpenAI key the
    upstream answers 429 resting, the Anthropic key with a TPM budget spent."""
    for i in range(4):
        await call(gateway, secrets[1], "llama-3.3-70b-versatile", stream=False, prompt=f"Classify ticket {i}")
    for i in range(6):
        await call(gateway, secrets[0], "gpt-4o", stream=bool(i % 2), prompt=f"Draft reply {i}")
        await call(gateway, secrets[1], "claude-3-5-haiku", stream=bool(i % 2), prompt=f"Triage ticket {i}")
    states = {p["name"]: p for p in (await Admin(gateway).call("GET", "admin/providers"))["data"]}
    print("providers:", {n: (p["breaker"]["state"], [k["state"] for k in p["keys"]]) for n, p in states.items()})


async def check_masked(gateway: Gateway) -> None:
    """The running configuration as the Config page gets it must name no provider key."""
    text = json.dumps(await Admin(gateway).call("GET", "admin/config"))
    leaked = [k for k in OPENAI_KEYS + ANTHROPIC_KEYS + GROQ_KEYS if k in text]
    if leaked:
        raise SystemExit(f"GET /admin/config shows {len(leaked)} provider key(s) unmasked")


#: On the Config page: the top sections folded, OpenAI's section and its keys (as fingerprints) unfolded.
OPEN_PROVIDERS = """() => {
  const section = (parent, name) => [...parent.querySelectorAll(":scope > li > details")]
    .find((d) => d.querySelector(":scope > summary > .k").textContent === name);
  const root = document.querySelector("#view .tree.root");
  for (const d of root.querySelectorAll(":scope > li > details")) d.open = false;
  const providers = section(root, "providers");
  providers.open = true;
  const openai = section(providers.querySelector(":scope > ul"), "openai");
  openai.open = true;
  const keys = section(openai.querySelector(":scope > ul"), "api_keys");
  keys.open = true;
  for (const d of keys.querySelectorAll("details")) d.open = true;
}"""


# -- the pictures -------------------------------------------------------------------------------------------
async def shoot(gateway: Gateway, secrets: list[str], out: Path, dark: bool) -> list[Path]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium: apt-get install -y chromium")
    saved = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800},
                                                color_scheme="dark" if dark else "light")
            page = await context.new_page()
            page.on("pageerror", lambda exc: print("page error:", exc, file=sys.stderr))
            await page.goto(f"{gateway.url}/admin/dashboard/")
            await page.get_by_label("API key").fill(MASTER)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_selector("#charts svg")
            await page.get_by_label("Last 7 days").check()
            for name, route, ready in SHOTS:
                if name != "overview":
                    await page.locator(f'.nav a[href="#{route}"]').click()
                if name == "providers":
                    await incident(gateway, secrets)
                    await page.get_by_role("button", name="Refresh").click()
                if name == "live":
                    await page.wait_for_selector("#status:has-text('Connected')")
                    await traffic(gateway, secrets, 14)
                await page.wait_for_selector(ready, timeout=15_000)
                await page.wait_for_load_state("networkidle") if name != "live" else await asyncio.sleep(0.5)
                if name == "config":  # the providers' section, where the keys are (as fingerprints)
                    await page.evaluate(OPEN_PROVIDERS)
                await page.wait_for_timeout(300)
                await page.evaluate("() => document.activeElement && document.activeElement.blur()")
                path = out / f"{name}.png"
                await page.screenshot(path=str(path))
                saved.append(path)
        finally:
            await browser.close()
    return saved


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard")
    parser.add_argument("--dark", action="store_true", help="the dark colour scheme")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    models = models_of()
    upstreams = [await OpenAIUpstream(models["openai"], throttled=THROTTLED_KEY).start(),
                 await AnthropicUpstream(models["anthropic"], ANTHROPIC_KEYS).start(),
                 await OpenAIUpstream(models["groq"], outage=1000).start()]  # Groq: down all along
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = governed_config(f"sqlite+aiosqlite:///{folder / 'dashboard.db'}",
                                 features={"audit_logging": True},
                                 extra={"audit": {"backend": "file", "path": str(folder / "audit.jsonl"),
                                                  "flush_interval_ms": 10},
                                        "pricing": {"models": {f"{p}/{m}": {"input": i, "output": o}
                                                               for p, m, i, o in MODELS}}})
        gateway = await start_gateway(None, write_config(folder, providers(*upstreams), server={"master_key": MASTER},
                                                         extra=config))
        try:
            secrets = await seed(gateway)
            await traffic(gateway, secrets, 6)
            await check_masked(gateway)
            await asyncio.sleep(0.3)  # the usage writer flushes every 20 ms
            for path in await shoot(gateway, secrets, args.out, args.dark):
                print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        finally:
            await gateway.close_clients()
            await gateway.server.close()
            for upstream in upstreams:
                await upstream.close()


if __name__ == "__main__":
    asyncio.run(main())
