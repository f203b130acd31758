"""Guardrails and the response cache with virtual keys: a guardrail on for some keys or teams only, answers
kept per tenant, and cache hits that cost nothing against a budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.gateway import Gateway
from tests.support.governed import MASTER, Admin, governed_config, mock_provider, usage_rows

SCOPED = """
guardrails:
  - name: strict-secrets
    type: regex
    priority: 1
    keys: [strict-bot]
    teams: [compliance]
    config:
      patterns:
        - {name: codename, pattern: "PROJECT-[A-Z]+", action: block}
"""
MESSAGES = [{"role": "user", "content": "Status of PROJECT-ORION?"}]


async def governed(make_gateway: Any, tmp_path: Path, **extra: Any) -> tuple[Gateway, Admin]:
    path = tmp_path / "scoped.yaml"
    path.write_text(SCOPED, encoding="utf-8")
    config = governed_config(f"sqlite+aiosqlite:///{tmp_path / 'gov.db'}",
                             extra={"guardrails": {"file": str(path)}, **extra})
    gateway: Gateway = await make_gateway(providers=mock_provider(), server={"master_key": MASTER}, extra=config)
    return gateway, Admin(gateway)


async def test_a_guardrail_applies_to_the_keys_and_teams_it_names_only(make_gateway: Any, tmp_path: Path) -> None:
    gateway, admin = await governed(make_gateway, tmp_path)
    team = await admin.call("POST", "admin/teams", {"name": "compliance"}, expect=201)
    strict = await admin.key(name="strict-bot")
    in_team = await admin.key(name="member", team_id=team["id"])
    free = await admin.key(name="free-bot")
    for key in (strict, in_team):
        with pytest.raises(openai.BadRequestError) as caught:
            await gateway.async_openai(api_key=key).chat.completions.create(model="mock/m", messages=MESSAGES)
        assert "strict-secrets" in str(caught.value) and "codename" in str(caught.value)
    answer = await gateway.async_openai(api_key=free).chat.completions.create(model="mock/m", messages=MESSAGES)
    assert answer.choices[0].message.content


async def test_tenants_do_not_share_answers_and_hits_cost_nothing(make_gateway: Any, tmp_path: Path) -> None:
    gateway, admin = await governed(make_gateway, tmp_path)
    await gateway.server.close()  # this test wants the cache on: a gateway of its own
    config = governed_config(f"sqlite+aiosqlite:///{tmp_path / 'cache.db'}")
    gateway = await make_gateway(providers=mock_provider(), server={"master_key": MASTER}, extra=config,
                                 cache={"responses": {"enabled": True}})
    admin = Admin(gateway)
    one = await admin.call("POST", "admin/teams", {"name": "one"}, expect=201)
    two = await admin.call("POST", "admin/teams", {"name": "two"}, expect=201)
    key_a = await admin.key(name="a", team_id=one["id"])
    key_a2 = await admin.key(name="a2", team_id=one["id"])
    key_b = await admin.key(name="b", team_id=two["id"])
    await admin.call("PUT", f"admin/budgets/team:{one['id']}", {"max_budget": 100.0, "period": "monthly"})
    messages = [{"role": "user", "content": "Say hello."}]

    async def ask(key: str, request_id: str) -> str:
        raw = await gateway.async_openai(api_key=key).chat.completions.with_raw_response.create(
            model="mock/m", messages=messages, extra_headers={"X-Request-ID": request_id})
        return raw.headers["X-GoModel-Cache"]

    assert await ask(key_a, "t-1") == "MISS"
    assert await ask(key_a2, "t-2") == "HIT"     # same team: shared
    assert await ask(key_b, "t-3") == "MISS"     # another team: never
    rows = {r["request_id"]: r for r in await usage_rows(gateway.state.governance.db, expect=3)}
    assert rows["t-1"]["cost"] > 0 and rows["t-1"]["outcome"] == "ok"
    assert rows["t-2"]["cost"] == 0 and rows["t-2"]["outcome"] == "cached"
    assert rows["t-2"]["input_tokens"] == rows["t-1"]["input_tokens"]
    async with gateway.http.get("v1/usage", headers={"Authorization": f"Bearer {key_a}"}) as resp:
        own = await resp.json()
    budget = next(b for b in own["budgets"] if b["id"] == f"team:{one['id']}")
    assert float(budget["spent"]) == pytest.approx(rows["t-1"]["cost"])  # the hit added nothing
    assert float(budget["reserved"]) == 0
