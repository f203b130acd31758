"""Entries from a CallRecord (request and attempts; bodies when kept), with secrets removed; the body capture."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gomodel_proxy.audit.capture import Bodies
from gomodel_proxy.audit.entries import REDACTED, redact, request_entries, step_entry
from gomodel_proxy.core.types import Attempt, CallRecord, FailoverStep, Principal, Usage

SECRET = "sk-live-abcdefghijklmnop1234"
GEMINI = "AIzaSyA-0123456789abcdefghijklmnopqrs"


def finished_call(**kw: object) -> CallRecord:
    call = CallRecord("req-1", "chat", started=100.0, stream=True, model_requested="smart", provider="b",
                      model="gpt-b", status=200, usage=Usage(10, 5, cached_tokens=2), cost=Decimal("0.000123"),
                      first_byte_at=100.25, upstream_started=100.01, upstream_answered_at=100.2, finished=101.0,
                      failovers=(FailoverStep("a/gpt-a", "b/gpt-b", "status_503"),),
                      principal=Principal(kind="key", key_id="k1", user_id="u1", team_id="t1"),
                      attempts=[Attempt("a", "fp-aaaa", 100.02, 100.1, 503),
                                Attempt("a", "fp-bbbb", 100.11, 100.12, 0, "connection"),
                                Attempt("b", "fp-cccc", 100.13, 100.9, 200)],
                      notes={"cache": "miss", "guardrails": [{"guardrail": "pii", "action": "redact"}]})
    for name, value in kw.items():
        setattr(call, name, value)
    return call


def test_a_request_entry_and_one_entry_per_attempt() -> None:
    entries = request_entries(finished_call(), ended_wall=2_000.0)
    req, *attempts = entries
    assert req["kind"] == "request" and req["request_id"] == "req-1" and req["endpoint"] == "chat"
    assert req["ts"] == 1_999.0 and req["time"] == "1970-01-01T00:33:19.000Z"
    assert (req["key_id"], req["user_id"], req["team_id"], req["principal"]) == ("k1", "u1", "t1", "key")
    assert (req["model_requested"], req["provider"], req["model"]) == ("smart", "b", "gpt-b")
    assert (req["status"], req["outcome"], req["stream"]) == (200, "ok", True)
    assert req["latency_ms"] == pytest.approx(1000.0) and req["ttfb_ms"] == pytest.approx(250.0)
    assert req["usage"] == {"input_tokens": 10, "output_tokens": 5, "cached_tokens": 2, "reasoning_tokens": 0,
                            "estimated": False}
    assert req["cost_usd"] == "0.000123" and req["cache"] == "miss"
    assert req["guardrails"] == [{"guardrail": "pii", "action": "redact"}]
    assert req["failovers"] == [{"from": "a/gpt-a", "to": "b/gpt-b", "reason": "status_503"}]
    assert req["attempts"] == 3 and "request_body" not in req
    assert [a["kind"] for a in attempts] == ["attempt"] * 3
    assert [a["id"] for a in attempts] == [f"{req['id']}.{n}" for n in (1, 2, 3)]
    assert [(a["provider"], a["provider_key"], a["status"], a["error"]) for a in attempts] == [
        ("a", "fp-aaaa", 503, None), ("a", "fp-bbbb", 0, "connection"), ("b", "fp-cccc", 200, None)]
    assert attempts[0]["started_ms"] == pytest.approx(20.0) and attempts[2]["latency_ms"] == pytest.approx(770.0)
    assert attempts[0]["ts"] == 1_999.02 and attempts[0]["key_id"] == "k1"


def test_a_plain_call_has_empty_fields() -> None:
    call = CallRecord("r", "models", started=5.0)
    (entry,) = request_entries(call, ended_wall=10.0)
    assert entry["ts"] == 10.0 and entry["latency_ms"] == 0.0 and entry["ttfb_ms"] is None
    assert entry["usage"] is None and entry["cost_usd"] is None and entry["failovers"] is None
    assert entry["model"] is None and entry["attempts"] == 0


def test_bodies_are_kept_cut_and_scrubbed_of_secrets() -> None:
    bodies = Bodies(f'{{"model":"m","messages":[{{"content":"my key is {SECRET}"}}]}}'.encode(), 4096)
    bodies.set_response(b'{"choices":[{"message":{"content":"Bearer abc.def-ghi"}}]}')
    (entry, *_) = request_entries(finished_call(audit=bodies), ended_wall=1.0, body_limit=4096)
    assert SECRET not in entry["request_body"] and REDACTED in entry["request_body"]
    assert "abc.def-ghi" not in entry["response_body"] and "bodies_truncated" not in entry
    (entry, *_) = request_entries(finished_call(audit=bodies), ended_wall=1.0, body_limit=10)
    assert entry["request_body"] == '{"model":"' and entry["bodies_truncated"] == {"request": True, "response": True}
    (entry, *_) = request_entries(finished_call(audit=bodies), ended_wall=1.0, body_limit=0)
    assert "request_body" not in entry


async def test_a_stream_is_reassembled_as_it_passed_up_to_the_limit() -> None:
    bodies = Bodies(b"{}", 10)
    assert bodies.response() is None
    assert await bodies.feed(b"data: 1\n\n") == b"data: 1\n\n"  # passed on unchanged, at once
    assert await bodies.feed(b"data: 2\n\n") == b"data: 2\n\n"
    assert await bodies.feed(b"data: 3\n\n") == b"data: 3\n\n"  # beyond the limit: passed, not kept
    assert await bodies.finish() == b""
    assert bodies.response() == b"data: 1\n\ndata: 2\n\n" and bodies.overflow
    (entry, *_) = request_entries(finished_call(audit=bodies), ended_wall=1.0, body_limit=10)
    assert entry["response_body"] == "data: 1\n\nd" and entry["bodies_truncated"]["response"] is True


def test_redaction_blanks_secret_named_fields_and_scrubs_free_text() -> None:
    entry = redact({"authorization": "Bearer x", "x-api-key": "k", "api_key": "k", "n": 1, "ok": True,
                    "headers": {"Authorization": "Bearer y", "accept": "json"}, "none": None,
                    "path": f"/gemini/v1beta/models/g:generateContent?key={GEMINI}&alt=sse",
                    "detail": f"saw {SECRET}", "other": f"left {SECRET}", "list": [{"token": "t"}]})
    assert entry["authorization"] == entry["x-api-key"] == entry["api_key"] == REDACTED
    assert entry["headers"] == {"Authorization": REDACTED, "accept": "json"}
    assert GEMINI not in entry["path"] and entry["path"].endswith("?key=[REDACTED]&alt=sse")
    assert entry["detail"] == "saw [REDACTED]" and entry["list"] == [{"token": REDACTED}]
    assert entry["other"] == f"left {SECRET}"  # only free-text fields are scanned (cheap), never a body unscanned
    step = step_entry({"request_id": "r", "error": f"key={GEMINI}"}, wall=3.0)
    assert step["kind"] == "step" and step["ts"] == 3.0 and GEMINI not in step["error"]
    assert step_entry({"a": 1})["ts"] > 1e9
