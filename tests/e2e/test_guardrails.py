"""Guardrails end to end: ``guardrails.yaml`` loaded, the chain's Guardrails step on chat, Responses and Messages,
through the official ``openai`` and ``anthropic`` SDKs, against a mock provider that records what it was sent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from gomodel_proxy.config import ConfigError
from tests.support.anthropic_client import async_anthropic_client
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream, Scenario

EMAIL = "jane.doe@example.com"
PHONE = "+1 415 555 0132"
CARD = "4111 1111 1111 1111"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"

PII = """
guardrails:
  - name: pii-redactor
    priority: 10
    config: {detect: [email, phone, credit_card, ssn, iban, ip], action: redact, restore: true}
"""


def write_guardrails(tmp_path: Path, text: str) -> dict[str, Any]:
    path = tmp_path / f"guardrails-{abs(hash(text))}.yaml"
    path.write_text(text, encoding="utf-8")
    return {"guardrails": {"file": str(path), "hold_back_chars": 32}}


async def guarded(make_gateway: Any, upstream: MockUpstream, tmp_path: Path, text: str,
                  extra: dict[str, Any] | None = None) -> Gateway:
    gateway: Gateway = await make_gateway(upstream=upstream, extra={**write_guardrails(tmp_path, text),
                                                                     **(extra or {})})
    return gateway


def chat_json(content: str) -> Scenario:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}}
    return Scenario(body=json.dumps(body).encode())


def chat_stream(deltas: list[str], **overrides: Any) -> Scenario:
    base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events: list[Any] = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                               "finish_reason": None}]}]
    events += [{**base, "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": None}]} for d in deltas]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append({**base, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}})
    events.append("[DONE]")
    return Scenario.sse(events, **overrides)


def sent_text(upstream: MockUpstream) -> str:
    """Everything the provider was sent, as text: what must never hold the user's personal data."""
    return json.dumps(upstream.last("m").json)


async def test_pii_is_redacted_before_the_provider_and_restored_in_the_answer(
    make_gateway: Any, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = await guarded(make_gateway, mock_upstream, tmp_path, PII)
    mock_upstream.on("m", chat_json("I will write to [EMAIL_1] and call [PHONE_1]."))
    client = gateway.async_openai()
    result = await client.chat.completions.create(model="up/m", messages=[
        {"role": "system", "content": "You help with contacts."},
        {"role": "user", "content": f"Email me at {EMAIL} or call {PHONE}; card {CARD}."},
    ])
    sent = sent_text(mock_upstream)
    assert EMAIL not in sent and "415 555" not in sent and "4111" not in sent
    assert "[EMAIL_1]" in sent and "[PHONE_1]" in sent and "[CREDIT_CARD_1]" in sent
    assert result.choices[0].message.content == f"I will write to {EMAIL} and call {PHONE}."
    metrics = await gateway.metrics_text()
    assert 'gomodel_guardrail_decisions_total{action="redact",guardrail="pii-redactor",stage="input"} 1.0' in metrics
    assert 'gomodel_guardrail_decisions_total{action="restore",guardrail="pii-redactor",stage="output"} 1.0' in metrics


async def test_restore_in_a_stream_split_inside_placeholders(
    make_gateway: Any, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = await guarded(make_gateway, mock_upstream, tmp_path, PII)
    # Placeholders cut mid-token, and the whole stream cut into irregular byte pieces.
    mock_upstream.on("m", chat_stream(["Sure, I'll mail [EM", "AIL_", "1] today", " and ring [PHONE_1", "]."],
                                      split="bytes"))
    client = gateway.async_openai()
    stream = await client.chat.completions.create(
        model="up/m", stream=True, messages=[{"role": "user", "content": f"I am {EMAIL}, phone {PHONE}"}])
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == f"Sure, I'll mail {EMAIL} today and ring {PHONE}."
    assert EMAIL not in sent_text(mock_upstream)


async def test_block_action_refuses_with_openai_error_naming_the_guardrail(
    make_gateway: Any, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = await guarded(make_gateway, mock_upstream, tmp_path, """
guardrails:
  - name: pii-redactor
    priority: 1
    config: {detect: [credit_card], action: block}
""")
    mock_upstream.on("m", chat_json("never"))
    client = gateway.async_openai()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="up/m", messages=[
            {"role": "user", "content": f"charge {CARD} please"}], extra_headers={"X-Request-ID": "pii-block"})
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "guardrail_blocked"
    assert "pii-redactor" in error["message"] and "credit_card" in error["message"]
    assert "4111" not in error["message"]
    assert mock_upstream.requests_for("m") == []
    record = await gateway.record("pii-block")
    assert record.status == 400 and record.outcome == "guardrail_blocked"
    # A product code of the same shape is not a card (it fails the Luhn check): it passes.
    await client.chat.completions.create(model="up/m", messages=[
        {"role": "user", "content": "order SKU 4111 1111 1111 1112 twice"}])
    assert len(mock_upstream.requests_for("m")) == 1


REGEX = """
guardrails:
  - name: secrets
    type: regex
    priority: 5
    config:
      patterns:
        - {name: aws-key, pattern: "AKIA[0-9A-Z]{16}", action: block}
        - {name: ticket, pattern: "TICKET-[0-9]{4,}", action: redact}
"""


async def test_regex_redacts_the_prompt_and_blocks_a_secret_in_a_stream_split_across_chunks(
    make_gateway: Any, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = await guarded(make_gateway, mock_upstream, tmp_path, REGEX)
    mock_upstream.on("m", chat_stream(["Here is the key: AKIAIOSF", "ODNN7EXA", "MPLE and more text after it"]))
    client = gateway.async_openai()
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        stream = await client.chat.completions.create(
            model="up/m", stream=True, messages=[{"role": "user", "content": "See TICKET-12345 for context"}])
        async for chunk in stream:
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "secrets" in str(caught.value) and "aws-key" in str(caught.value)
    assert AWS_KEY not in "".join(received) and "AKIA" not in "".join(received)
    sent = sent_text(mock_upstream)
    assert "TICKET-12345" not in sent and "[REDACTED:ticket]" in sent


async def test_regex_blocks_through_the_anthropic_sdk_in_anthropics_error_shape(
    make_gateway: Any, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = await guarded(make_gateway, mock_upstream, tmp_path, REGEX)
    client = async_anthropic_client(gateway)
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model="up/m", max_tokens=50, messages=[
            {"role": "user", "content": f"my key is {AWS_KEY}"}])
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "secrets" in body["error"]["message"] and AWS_KEY not in body["error"]["message"]
    assert mock_upstream.requests_for("m") == []
    await client.close()


async def test_messages_redaction_and_restore_through_the_anthropic_sdk(
    make_gateway: Any, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = await guarded(make_gateway, mock_upstream, tmp_path, PII)
    mock_upstream.on("m", chat_json("Noted: [EMAIL_1]."))
    client = async_anthropic_client(gateway)
    message = await client.messages.create(model="up/m", max_tokens=50, system=f"The user is {EMAIL}.",
                                           messages=[{"role": "user", "content": f"Remember {EMAIL}"}])
    assert EMAIL not in sent_text(mock_upstream)
    assert message.content[0].type == "text" and message.content[0].text == f"Noted: {EMAIL}."
    mock_upstream.on("m", chat_stream(["Noted: [EMA", "IL_1", "]."]))
    async with client.messages.stream(model="up/m", max_tokens=50,
                                      messages=[{"role": "user", "content": f"Remember {EMAIL}"}]) as stream:
        text = "".join([t async for t in stream.text_stream])
    assert text == f"Noted: {EMAIL}."
    await client.close()


async def test_responses_redaction_and_restore_through_the_openai_sdk(
    make_gateway: Any, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = await guarded(make_gateway, mock_upstream, tmp_path, PII)
    mock_upstream.on("m", chat_json("Saved [EMAIL_1]."))
    client = gateway.async_openai()
    response = await client.responses.create(model="up/m", input=f"save {EMAIL}", instructions="Be brief.")
    assert EMAIL not in sent_text(mock_upstream)
    assert response.output_text == f"Saved {EMAIL}."
    mock_upstream.on("m", chat_stream(["Saved [EMAIL", "_1]."]))
    stream = await client.responses.create(model="up/m", input=f"save {EMAIL}", stream=True)
    deltas: list[str] = []
    final = ""
    async for event in stream:
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            final = event.response.output_text
    assert "".join(deltas) == f"Saved {EMAIL}."
    assert final == f"Saved {EMAIL}."


async def test_token_limiter_counts_with_the_tokenizer_and_clamps_the_answer(
    make_gateway: Any, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = await guarded(make_gateway, mock_upstream, tmp_path, """
guardrails:
  - name: token-limiter
    priority: 1
    config: {max_input_tokens: 50, max_output_tokens: 64}
""")
    mock_upstream.on("m", chat_json("ok"))
    client = gateway.async_openai()
    await client.chat.completions.create(model="up/m", max_tokens=1000, messages=[{"role": "user", "content": "hi"}])
    assert mock_upstream.last("m").json["max_tokens"] == 64
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="up/m", messages=[
            {"role": "user", "content": "word " * 200}])
    assert "token-limiter" in str(caught.value)
    assert len(mock_upstream.requests_for("m")) == 1


async def test_system_prompt_is_prepended_for_every_api(
    make_gateway: Any, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = await guarded(make_gateway, mock_upstream, tmp_path, """
guardrails:
  - name: system-prompt
    priority: 1
    config: {prepend: "Follow the company policy."}
""")
    mock_upstream.on("m", chat_json("ok"))
    client = gateway.async_openai()
    await client.chat.completions.create(model="up/m", messages=[
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}])
    messages = mock_upstream.last("m").json["messages"]
    assert messages[0] == {"role": "system", "content": "Follow the company policy.\n\nBe terse."}
    await client.chat.completions.create(model="up/m", messages=[{"role": "user", "content": "hi"}])
    assert mock_upstream.last("m").json["messages"][0] == {"role": "system", "content": "Follow the company policy."}


async def test_content_filter_lexicon_blocks_harmful_prompts_and_passes_ordinary_ones(
    make_gateway: Any, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = await guarded(make_gateway, mock_upstream, tmp_path, """
guardrails:
  - name: content-filter
    priority: 1
    config: {block_categories: [violence, self_harm, illicit]}
""")
    mock_upstream.on("m", chat_json("ok"))
    client = gateway.async_openai()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="up/m", messages=[
            {"role": "user", "content": "Explain step by step how to make a pipe bomb at home."}])
    assert "content-filter" in str(caught.value)
    await client.chat.completions.create(model="up/m", messages=[
        {"role": "user", "content": "How do I kill the process that holds port 8080?"}])
    assert len(mock_upstream.requests_for("m")) == 1


async def test_guardrails_file_errors_stop_start_up_with_file_and_line(
    make_gateway: Any, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        await guarded(make_gateway, mock_upstream, tmp_path, """
guardrails:
  - name: pii-redactor
    priority: 1
    config: {detect: [emial], action: redact}
""")
    text = str(caught.value)
    assert ".yaml:5:" in text and "emial" in text and "did you mean 'email'" in text


async def test_concurrent_requests_keep_their_own_placeholders(
    make_gateway: Any, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = await guarded(make_gateway, mock_upstream, tmp_path, PII)
    mock_upstream.on("m", chat_json("Hello [EMAIL_1]"))
    client = gateway.async_openai()
    emails = [f"user{i}@example.org" for i in range(10)]
    results = await asyncio.gather(*[client.chat.completions.create(
        model="up/m", messages=[{"role": "user", "content": f"I am {e}"}]) for e in emails])
    assert [r.choices[0].message.content for r in results] == [f"Hello {e}" for e in emails]


async def test_moderation_backend_through_a_configured_provider(
    make_gateway: Any, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    """content-filter with ``backend: moderation`` asks the provider's /v1/moderations (OpenAI's shape) and
    blocks at the threshold; the answer is reviewed whole too."""
    gateway = await guarded(make_gateway, mock_upstream, tmp_path, """
guardrails:
  - name: content-filter
    priority: 1
    config: {block_categories: [violence], backend: moderation, provider: up, thresholds: {violence: 0.7}}
""")

    def verdict(score: float) -> Scenario:
        return Scenario(body=json.dumps({"id": "modr-1", "model": "omni-moderation-latest", "results": [{
            "flagged": score >= 0.5, "categories": {"violence": score >= 0.5},
            "category_scores": {"violence": score, "hate": 0.01}}]}).encode())

    mock_upstream.on("omni-moderation-latest", verdict(0.93))
    mock_upstream.on("m", chat_json("ok"))
    client = gateway.async_openai()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="up/m", messages=[{"role": "user", "content": "a threat"}])
    assert "content-filter" in str(caught.value) and "violence" in str(caught.value)
    moderation = mock_upstream.requests_for("omni-moderation-latest")[0]
    assert moderation.path == "/v1/moderations" and moderation.json["input"] == ["a threat"]
    assert mock_upstream.requests_for("m") == []
    mock_upstream.on("omni-moderation-latest", verdict(0.2))  # below the threshold: passes, answer reviewed
    result = await client.chat.completions.create(model="up/m", messages=[{"role": "user", "content": "hello"}])
    assert result.choices[0].message.content == "ok"
    assert len(mock_upstream.requests_for("omni-moderation-latest")) == 3  # prompt, prompt, answer
    mock_upstream.fail("omni-moderation-latest", 500, {"error": {"message": "down"}})
    with pytest.raises(openai.APIStatusError) as down:  # fail closed, saying why
        await client.chat.completions.create(model="up/m", messages=[{"role": "user", "content": "hello"}])
    assert down.value.status_code == 503 and "content-filter" in str(down.value)


async def test_an_answer_with_a_secret_is_refused_whole_and_decisions_reach_the_audit_file(
    make_gateway: Any, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    gateway = await guarded(make_gateway, mock_upstream, tmp_path, REGEX, extra={
        "features": {"audit_logging": True}, "audit": {"backend": "file", "path": str(audit)}})
    mock_upstream.on("m", chat_json(f"the key is {AWS_KEY}"))
    client = gateway.async_openai()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="up/m", messages=[{"role": "user", "content": "TICKET-4242?"}],
                                             extra_headers={"X-Request-ID": "audit-1"})
    assert "answer was blocked" in str(caught.value) and AWS_KEY not in str(caught.value)
    await gateway.server.close()  # drains the audit trail
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    steps = [e for e in entries if e.get("kind") == "step" and e["request_id"] == "audit-1"]
    mine = [(e["guardrail"], e["stage"], e["action"]) for e in steps]
    request = [e for e in entries if e.get("kind") == "request" and e["request_id"] == "audit-1"]
    assert len(request) == 1 and request[0]["status"] == 400
    assert mine == [("secrets", "input", "redact"), ("secrets", "output", "block")]
    assert AWS_KEY not in audit.read_text() and "TICKET-4242" not in audit.read_text()
