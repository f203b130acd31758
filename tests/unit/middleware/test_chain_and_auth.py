"""The request chain (order, post-processing on return, error and cancellation), authentication, model
access, the in-memory key cache (against a real database) and the route-side entry ``governed``."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import update

from gomodel_proxy.config.schema import JWTConfig
from gomodel_proxy.core.errors import AuthenticationError, PermissionDeniedError
from gomodel_proxy.core.interfaces import Handler, RequestContext
from gomodel_proxy.core.types import CallRecord, Principal
from gomodel_proxy.middleware import auth
from gomodel_proxy.middleware.auth import MASTER, Authenticator, ModelAccess, model_allowed, presented_key
from gomodel_proxy.middleware.chain import Chain
from gomodel_proxy.middleware.jwt_verifier import JWTVerifier, looks_like_jwt
from gomodel_proxy.middleware.key_cache import KeyCache
from gomodel_proxy.server.inbound import governed, max_output_tokens
from gomodel_proxy.server.state import CALL, STATE
from gomodel_proxy.storage import raw, repository
from gomodel_proxy.storage.database import Database
from gomodel_proxy.storage.tables import api_keys, hash_key, utcnow

MASTER_KEY = "sk-master-unit-0123456789"


class Log:
    """A structlog-shaped logger that keeps what it was told."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def _at(self, level: str) -> Any:
        def log(event: str, **fields: Any) -> None:
            self.lines.append((level, event, fields))
        return log

    def __getattr__(self, level: str) -> Any:
        return self._at(level)


def ctx(principal: Principal = MASTER, body: dict[str, Any] | None = None, *, model_requested: str = "m",
        provider: str = "mock", model: str = "m") -> RequestContext:
    call = CallRecord(request_id="r1", endpoint="chat", model_requested=model_requested, provider=provider,
                      model=model, principal=principal)
    return RequestContext(call, body, 100, None)


def request(**headers: str) -> web.Request:
    return make_mocked_request("POST", "/v1/chat/completions", headers=headers)


# -- the chain ------------------------------------------------------------------------------------
class Step:
    """A middleware that notes when it sees the request and when the answer."""

    def __init__(self, name: str, seen: list[str]) -> None:
        self.name = name
        self.seen = seen

    async def process(self, context: RequestContext, call_next: Handler) -> Any:
        self.seen.append(f"{self.name}:before")
        try:
            result = await call_next(context)
            self.seen.append(f"{self.name}:after={result}")
            return result
        finally:
            self.seen.append(f"{self.name}:finally")


async def test_the_first_middleware_sees_the_request_first_and_the_answer_last() -> None:
    seen: list[str] = []

    async def handler(context: RequestContext) -> str:
        seen.append("handler")
        return "answer"

    chain = Chain([Step("a", seen), Step("b", seen)])
    assert bool(chain) and chain.names() == ["Step", "Step"]
    assert await chain.run(ctx(), handler) == "answer"
    assert seen == ["a:before", "b:before", "handler", "b:after=answer", "b:finally", "a:after=answer",
                    "a:finally"]


async def test_an_empty_chain_is_false_and_runs_the_handler_alone() -> None:
    chain = Chain(())
    context = ctx()

    async def handler(got: RequestContext) -> RequestContext:
        return got

    assert not chain and chain.names() == []
    assert await chain.run(context, handler) is context


async def test_post_processing_runs_when_the_handler_raises() -> None:
    seen: list[str] = []

    async def handler(context: RequestContext) -> None:
        seen.append("handler")
        raise ValueError("upstream broke")

    with pytest.raises(ValueError, match="upstream broke"):
        await Chain([Step("a", seen), Step("b", seen)]).run(ctx(), handler)
    assert seen == ["a:before", "b:before", "handler", "b:finally", "a:finally"]


async def test_post_processing_runs_when_the_request_is_cancelled() -> None:
    seen: list[str] = []
    entered = asyncio.Event()

    async def handler(context: RequestContext) -> None:
        entered.set()
        await asyncio.Event().wait()  # a stream whose client goes away

    task = asyncio.create_task(Chain([Step("a", seen), Step("b", seen)]).run(ctx(), handler))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["a:before", "b:before", "b:finally", "a:finally"]


# -- governed / max_output_tokens ---------------------------------------------------------------------
@pytest.mark.parametrize(("body", "expected"), [
    (None, None),
    ({}, None),
    ({"max_tokens": 50}, 50),
    ({"max_completion_tokens": 60}, 60),
    ({"max_output_tokens": 70}, 70),
    ({"max_tokens": True, "max_output_tokens": 5}, 5),  # a bool is not a count
    ({"max_tokens": 0, "max_completion_tokens": -3}, None),
    ({"max_tokens": "100"}, None),
    ({"max_tokens": 1.5}, None),
])
def test_max_output_tokens_reads_every_apis_spelling(body: dict[str, Any] | None, expected: int | None) -> None:
    assert max_output_tokens(body) == expected


def _routed(chain: Chain) -> web.Request:
    app = web.Application()
    app[STATE] = SimpleNamespace(chain=chain)  # type: ignore[assignment]
    req = make_mocked_request("POST", "/v1/chat/completions", app=app)
    req[CALL] = CallRecord(request_id="r9", endpoint="chat", principal=Principal(kind="key", key_id="k1"))
    return req


async def test_governed_without_a_chain_calls_the_handler_directly() -> None:
    calls = 0

    async def handler() -> str:
        nonlocal calls
        calls += 1
        return "direct"

    assert await governed(_routed(Chain(())), {"max_tokens": 9}, 40, handler) == "direct"
    assert calls == 1


async def test_governed_gives_the_chain_the_call_body_size_and_cap() -> None:
    contexts: list[RequestContext] = []

    class Capture:
        async def process(self, context: RequestContext, call_next: Handler) -> Any:
            contexts.append(context)
            return f"wrapped({await call_next(context)})"

    async def handler() -> str:
        return "relayed"

    req = _routed(Chain([Capture()]))
    body = {"model": "m", "max_completion_tokens": 33}
    assert await governed(req, body, 123, handler) == "wrapped(relayed)"
    (seen,) = contexts
    assert seen.call is req[CALL] and seen.body is body
    assert (seen.body_bytes, seen.max_output_tokens) == (123, 33)
    assert seen.principal.key_id == "k1"


# -- presented credentials --------------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "expected"), [
    ({"Authorization": "Bearer  sk-a "}, "sk-a"),
    ({"Authorization": "bearer sk-b"}, "sk-b"),
    ({"x-api-key": " sk-c "}, "sk-c"),
    ({"Authorization": "Basic dXNlcg==", "x-api-key": "sk-d"}, "sk-d"),  # not a bearer: falls back
    ({"Authorization": "Bearer    "}, None),
    ({"x-api-key": "   "}, None),
    ({}, None),
])
def test_presented_key_reads_bearer_then_x_api_key(headers: dict[str, str], expected: str | None) -> None:
    assert presented_key(request(**headers)) == expected


# -- the authenticator ------------------------------------------------------------------------------
class FakeJWT:
    """A verifier that accepts any token; which credentials look like tokens is the real rule."""

    looks_like = staticmethod(looks_like_jwt)

    def __init__(self) -> None:
        self.verified: list[str] = []

    async def verify(self, token: str) -> Principal:
        self.verified.append(token)
        return Principal(kind="jwt", user_id="alice")


async def test_the_master_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    authenticator = Authenticator(MASTER_KEY)
    assert await authenticator.authenticate(request(Authorization=f"Bearer {MASTER_KEY}")) is MASTER
    assert compared == [(MASTER_KEY.encode(), MASTER_KEY.encode())]
    with pytest.raises(AuthenticationError) as wrong:
        await authenticator.authenticate(request(**{"x-api-key": MASTER_KEY + "x"}))
    assert wrong.value.status == 401 and wrong.value.code == "invalid_api_key"
    assert len(compared) == 2


async def test_a_missing_credential_is_a_401_that_says_how_to_send_one() -> None:
    with pytest.raises(AuthenticationError) as caught:
        await Authenticator(MASTER_KEY).authenticate(request())
    assert caught.value.status == 401 and "Missing API key" in caught.value.message


async def test_without_a_master_key_nothing_matches_it() -> None:
    with pytest.raises(AuthenticationError):
        await Authenticator(None, jwt=FakeJWT()).authenticate(request(Authorization="Bearer sk-anything"))  # type: ignore[arg-type]


async def test_only_jwt_looking_tokens_reach_the_verifier() -> None:
    verifier = FakeJWT()
    authenticator = Authenticator(MASTER_KEY, jwt=verifier)  # type: ignore[arg-type]
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(request(Authorization="Bearer sk-gm-not-a-jwt"))
    assert verifier.verified == []
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
    principal = await authenticator.authenticate(request(Authorization=f"Bearer {token}"))
    assert principal.kind == "jwt" and principal.user_id == "alice" and verifier.verified == [token]


async def test_a_real_token_from_the_identity_provider_becomes_a_jwt_principal() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    verifier = JWTVerifier(JWTConfig(issuer="https://idp.example/", public_key=pem, algorithms=["ES256"]))
    await verifier.start()
    try:
        now = int(time.time())
        token = jwt.encode({"iss": "https://idp.example/", "sub": "bob", "team": "research", "iat": now,
                            "exp": now + 60}, private, algorithm="ES256")
        principal = await Authenticator(MASTER_KEY, jwt=verifier).authenticate(
            request(Authorization=f"Bearer {token}"))
        assert (principal.kind, principal.user_id, principal.team_id) == ("jwt", "bob", "research")
    finally:
        await verifier.close()


async def test_virtual_keys_live_expired_and_unknown(db: Database) -> None:
    live_row, live = await repository.create_key(db, name="live", rpm=7)
    _, expired = await repository.create_key(db, name="old", expires_at=utcnow() - timedelta(minutes=1))
    cache = KeyCache(db, refresh_s=60, logger=Log())
    await cache.refresh()
    authenticator = Authenticator(MASTER_KEY, cache)
    principal = await authenticator.authenticate(request(Authorization=f"Bearer {live}"))
    assert (principal.kind, principal.key_id, principal.rpm, principal.is_admin) == ("key", live_row.id, 7, False)
    with pytest.raises(AuthenticationError) as old:
        await authenticator.authenticate(request(**{"x-api-key": expired}))
    assert old.value.code == "expired_api_key" and old.value.status == 401
    with pytest.raises(AuthenticationError) as unknown:
        await authenticator.authenticate(request(Authorization="Bearer sk-gm-unknown"))
    assert unknown.value.code == "invalid_api_key"


# -- model access -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("allowed", "requested", "provider", "model", "expected"), [
    (None, "anything", "p", "x", True),
    (("gpt-4o",), "gpt-4o", "openai", "gpt-4o-2024", True),  # the requested name
    (("openai/*",), "fast", "openai", "gpt-4o", True),  # provider/model behind an alias
    (("openai/gpt-4*",), "openai/gpt-4o-mini", "openai", "gpt-4o-mini", True),
    (("gpt-4?",), "gpt-4o", "", "gpt-4o", True),  # no provider: the model alone
    (("openai/*",), "anthropic/claude", "anthropic", "claude", False),
    (("GPT-4O",), "gpt-4o", "openai", "gpt-4o", False),  # case matters
    ((), "gpt-4o", "openai", "gpt-4o", False),
])
def test_model_allowed_matches_patterns_on_the_name_and_on_provider_model(
    allowed: tuple[str, ...] | None, requested: str, provider: str, model: str, expected: bool
) -> None:
    assert model_allowed(Principal(kind="key", allowed_models=allowed), requested, provider, model) is expected


async def _passes(context: RequestContext) -> str:
    return "passed"


async def test_model_access_lets_an_allowed_model_and_an_unlimited_pass_through_route_through() -> None:
    limited = Principal(kind="key", allowed_models=("mock/*",))
    assert await ModelAccess().process(ctx(limited, {"model": "m"}), _passes) == "passed"
    assert await ModelAccess().process(ctx(Principal(kind="key"), None), _passes) == "passed"


async def test_model_access_refuses_a_limited_key_on_pass_through() -> None:
    limited = Principal(kind="key", allowed_models=("mock/*",))
    with pytest.raises(PermissionDeniedError) as caught:
        await ModelAccess().process(ctx(limited, None), _passes)
    assert caught.value.status == 403 and caught.value.code == "model_not_allowed"
    assert "pass-through" in caught.value.message


@pytest.mark.parametrize(("allowed", "listed"), [(("a/*", "b"), "a/*, b"), ((), "none")])
async def test_model_access_refuses_another_model_naming_the_allowed_ones(
    allowed: tuple[str, ...], listed: str
) -> None:
    context = ctx(Principal(kind="key", allowed_models=allowed), {"model": "other"}, model_requested="other",
                  provider="mock", model="other")
    with pytest.raises(PermissionDeniedError) as caught:
        await ModelAccess().process(context, _passes)
    assert caught.value.code == "model_not_allowed" and caught.value.param == "model"
    assert "'other'" in caught.value.message and f"Allowed: {listed}." in caught.value.message


# -- the key cache ----------------------------------------------------------------------------------
async def test_refresh_reads_changes_incrementally(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    await repository.create_team(db, id="research", name="Research")
    await repository.create_user(db, id="alice")
    row, key = await repository.create_key(db, user_id="alice", allowed_models=["mock/*"], tpm=100)
    other_row, other = await repository.create_key(db, team_id="research")
    cache = KeyCache(db, refresh_s=60, logger=Log())
    asked: list[Any] = []
    real = raw.keys_changed_since

    async def spy(database: Database, since: Any) -> Any:
        asked.append(since)
        return await real(database, since)

    monkeypatch.setattr(raw, "keys_changed_since", spy)  # the cache reads with the raw driver
    await cache.refresh()
    assert cache.loaded and cache.live_count == 2 and asked == [None]
    found = cache.lookup(key)
    assert found is not None
    assert found[1] == Principal(kind="key", key_id=row.id, user_id="alice", team_id=None, is_admin=False,
                                 allowed_models=("mock/*",), rpm=None, tpm=100)
    assert cache.lookup(other) is not None and cache.lookup(other)[1].team_id == "research"  # type: ignore[index]

    # The user joins a team and becomes an admin: the key's principal follows, though the key did not change.
    await repository.update_user(db, "alice", {"team_id": "research", "is_admin": True})
    await cache.refresh()
    assert asked[1] is not None  # only what changed since the last read
    principal = cache.lookup(key)[1]  # type: ignore[index]
    assert principal.team_id == "research" and principal.is_admin is True
    assert cache.users["alice"].team_id == "research" and "research" in cache.teams

    # Revoked: dropped from the lookup, still known by id.
    await repository.revoke_key(db, other_row.id)
    await cache.refresh()
    assert cache.lookup(other) is None and cache.live_count == 1
    assert cache.keys_by_id[other_row.id].revoked_at is not None


async def test_a_key_whose_hash_changed_elsewhere_is_found_only_by_its_new_hash(db: Database) -> None:
    row, key = await repository.create_key(db)
    cache = KeyCache(db, refresh_s=60, logger=Log())
    await cache.refresh()
    assert cache.lookup(key) is not None
    async with db.begin() as conn:
        await conn.execute(update(api_keys).where(api_keys.c.id == row.id).values(
            key_hash=hash_key("sk-gm-rotated"), updated_at=utcnow() + timedelta(seconds=1)))
    await cache.refresh()
    assert cache.lookup(key) is None
    rotated = cache.lookup("sk-gm-rotated")
    assert rotated is not None and rotated[1].key_id == row.id and cache.live_count == 1


async def test_budgets_are_loaded_whole(db: Database) -> None:
    row, _ = await repository.create_key(db)
    await repository.put_budget(db, f"key:{row.id}", max_budget=5.0, period="daily")
    cache = KeyCache(db, refresh_s=60, logger=Log())
    await cache.refresh()
    assert cache.budgets[f"key:{row.id}"].max_budget == 5.0
    await repository.delete_budget(db, f"key:{row.id}")
    await cache.refresh()
    assert cache.budgets == {}


def test_expired_compares_with_now_or_the_given_time() -> None:
    now = utcnow()
    row = SimpleNamespace(expires_at=now + timedelta(minutes=5))
    assert KeyCache.expired(row) is False  # type: ignore[arg-type]
    assert KeyCache.expired(row, now + timedelta(minutes=5)) is True  # type: ignore[arg-type]
    assert KeyCache.expired(SimpleNamespace(expires_at=None)) is False  # type: ignore[arg-type]


async def test_the_refresh_loop_survives_a_database_outage(db: Database) -> None:
    _, key = await repository.create_key(db)
    log = Log()
    cache = KeyCache(db, refresh_s=0.01, logger=log)
    await cache.start()
    try:
        await db.close()  # the database goes away: every refresh fails
        await asyncio.sleep(0.15)
        warnings = [line for line in log.lines if line[0] == "warning"]
        assert len(warnings) == 1, log.lines  # logged once, not on every attempt
        assert "key cache refresh failed" in warnings[0][1] and warnings[0][2]["error"]
        assert cache.lookup(key) is not None  # still serving the keys last read
        await db.connect()
        _, late = await repository.create_key(db)
        for _ in range(100):
            if cache.lookup(late) is not None:
                break
            await asyncio.sleep(0.01)
        assert cache.lookup(late) is not None
        assert [line[1] for line in log.lines if line[0] == "info"] == ["key cache refresh works again"]
    finally:
        await cache.close()
    assert cache._task is None
    await cache.close()  # closing twice is harmless
