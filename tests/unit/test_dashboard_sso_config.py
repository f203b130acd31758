"""``dashboard.sso`` in the configuration: accepted as documented, and every mistake stops start-up with the
file, the line, the key and the fix (secrets through ``${ENV}`` never shown)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gomodel_proxy.config import ConfigError, load_config
from gomodel_proxy.config.schema import SSOConfig

BASE = """\
server:
  master_key: gm-master-0001
features:
  admin_api: true
"""

GOOD = """\
dashboard:
  sso:
    issuer: https://idp.example.com/realms/x
    client_id: gomodel-dashboard
    client_secret: ${OIDC_CLIENT_SECRET}
    name: "Company SSO"
    scopes: [openid, profile, email, groups]
    groups_claim: groups
    admin_groups: [gateway-admins]
    read_only_groups: [gateway-viewers]
"""


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None, base: str = BASE) -> SSOConfig | None:
    path = tmp_path / "gateway.yaml"
    path.write_text(base + text, encoding="utf-8")
    return load_config(path, env=env or {}).dashboard.sso


def _problems(tmp_path: Path, text: str, base: str = BASE, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text, env, base)
    return info.value.problems


def test_the_documented_example_loads(tmp_path: Path) -> None:
    sso = _load(tmp_path, GOOD, {"OIDC_CLIENT_SECRET": "the-secret"})
    assert sso is not None
    assert (sso.issuer, sso.client_id, sso.client_secret, sso.name) == (
        "https://idp.example.com/realms/x", "gomodel-dashboard", "the-secret", "Company SSO")
    assert sso.admin_groups == ["gateway-admins"] and sso.read_only_groups == ["gateway-viewers"]
    assert sso.redirect_url == "" and sso.timeout_s == 10.0


def test_defaults_and_a_public_client(tmp_path: Path) -> None:
    sso = _load(tmp_path, "dashboard:\n  sso:\n    issuer: http://127.0.0.1:8081\n    client_id: dash\n"
                          "    read_only_groups: [viewers]\n")
    assert sso is not None and sso.client_secret == "" and sso.scopes == ["openid", "profile", "email"]
    assert sso.name == "SSO" and sso.groups_claim == "groups" and sso.admin_groups == []
    assert _load(tmp_path, "") is None  # no dashboard section: no SSO


def test_missing_keys_are_named(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "dashboard:\n  sso:\n    issuer: https://idp.example.com\n")
    assert len(problems) == 1
    assert "gateway.yaml:6:" in problems[0] and "dashboard.sso: missing required key 'client_id'" in problems[0]
    problems = _problems(tmp_path, "dashboard:\n  sso:\n    issuer: ${NOT_SET}\n    client_id: ${NOT_SET_EITHER}\n"
                                   "    admin_groups: [a]\n")
    assert any("dashboard.sso.issuer: required; set it to the provider's issuer" in p for p in problems), problems
    assert any("dashboard.sso.client_id: required" in p and "gateway.yaml:8:" in p for p in problems), problems


@pytest.mark.parametrize(("issuer", "fix"), [
    ("http://idp.example.com/realms/x", "use https"),
    ("ftp://idp.example.com", "not an https URL"),
    ("https://idp.example.com/x?tenant=1", "has a query or fragment"),
    ("https://user:pw@idp.example.com", "not an https URL"),
    ("idp.example.com", "not an https URL"),
    ("https://idp.example.com:99999", "not a URL"),
])
def test_the_issuer_must_be_https(tmp_path: Path, issuer: str, fix: str) -> None:
    problems = _problems(tmp_path, GOOD.replace("https://idp.example.com/realms/x", issuer),
                         env={"OIDC_CLIENT_SECRET": "s"})
    assert len(problems) == 1, problems
    assert "gateway.yaml:7:5: dashboard.sso.issuer:" in problems[0] and fix in problems[0], problems


@pytest.mark.parametrize("issuer", ["http://127.0.0.1:8081", "http://localhost:8081/realms/x", "http://[::1]:8081"])
def test_http_is_accepted_on_loopback(tmp_path: Path, issuer: str) -> None:
    sso = _load(tmp_path, GOOD.replace("https://idp.example.com/realms/x", issuer))
    assert sso is not None and sso.issuer == issuer


def test_no_group_at_all(tmp_path: Path) -> None:
    text = GOOD.replace("    admin_groups: [gateway-admins]\n", "")
    text = text.replace("    read_only_groups: [gateway-viewers]\n", "")
    problems = _problems(tmp_path, text)
    assert len(problems) == 1 and "dashboard.sso.admin_groups: no group would be let in" in problems[0]
    assert "read_only_groups" in problems[0] and "admin_groups: [gateway-admins]" in problems[0]
    problems = _problems(tmp_path, GOOD.replace("[gateway-admins]", "[gateway-admins, '']"))
    assert len(problems) == 1 and "gateway.yaml:13:5: dashboard.sso.admin_groups: an empty group name" in problems[0]


def test_scopes_name_and_claim(tmp_path: Path) -> None:
    problems = _problems(tmp_path, GOOD.replace("[openid, profile, email, groups]", "[profile, email]"))
    assert len(problems) == 1 and "dashboard.sso.scopes:" in problems[0] and "'openid' among them" in problems[0]
    problems = _problems(tmp_path, GOOD.replace('"Company SSO"', '""').replace("groups_claim: groups",
                                                                               "groups_claim: ''"))
    assert len(problems) == 2
    assert "dashboard.sso.name: the sign-in button's label" in problems[0]
    assert "dashboard.sso.groups_claim: name the claim" in problems[1]


def test_sso_needs_the_admin_api_and_a_master_key(tmp_path: Path) -> None:
    problems = _problems(tmp_path, GOOD, base="features:\n  admin_api: false\n")
    assert len(problems) == 1
    assert "dashboard.sso: the dashboard needs the admin API and a master key" in problems[0]
    assert "set features.admin_api: true and server.master_key" in problems[0]
    # With the admin API on but no master key, both problems are told.
    problems = _problems(tmp_path, GOOD, base="features:\n  admin_api: true\n")
    assert len(problems) == 2 and "features.admin_api" in problems[0] and "dashboard.sso:" in problems[1]
    # GOMODEL_MASTER_KEY is a master key too.
    assert _load(tmp_path, GOOD, {"GOMODEL_MASTER_KEY": "gm-env"}, base="features:\n  admin_api: true\n")


@pytest.mark.parametrize(("url", "fix"), [
    ("https://gw.example.com/admin/dashboard/sso/callback", None),
    ("https://gw.example.com/gw/admin/dashboard/sso/callback", None),
    ("http://127.0.0.1:8080/admin/dashboard/sso/callback", None),
    ("https://gw.example.com/callback", "does not end with /admin/dashboard/sso/callback"),
    ("http://gw.example.com/admin/dashboard/sso/callback", "use https"),
    ("https://gw.example.com/admin/dashboard/sso/callback#x", "has a query or fragment"),
])
def test_redirect_url(tmp_path: Path, url: str, fix: str | None) -> None:
    text = GOOD + f"    redirect_url: {url}\n"
    if fix is None:
        sso = _load(tmp_path, text)
        assert sso is not None and sso.redirect_url == url
    else:
        problems = _problems(tmp_path, text)
        assert len(problems) == 1 and "dashboard.sso.redirect_url:" in problems[0] and fix in problems[0], problems


def test_unknown_keys_and_the_secret_stay_hidden(tmp_path: Path) -> None:
    problems = _problems(tmp_path, GOOD + "    admin_group: [x]\n")
    assert len(problems) == 1 and "dashboard.sso.admin_group: unknown key (did you mean 'admin_groups'?)" in problems[0]
    problems = _problems(tmp_path, GOOD.replace("${OIDC_CLIENT_SECRET}", "[not, a, string]"))
    assert len(problems) == 1 and "dashboard.sso.client_secret: expected a string" in problems[0]
    problems = _problems(tmp_path, GOOD.replace("https://idp.example.com/realms/x", "http://idp.example.com"),
                         env={"OIDC_CLIENT_SECRET": "super-secret-value"})
    assert all("super-secret-value" not in p for p in problems)
