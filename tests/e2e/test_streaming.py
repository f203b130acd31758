"""Streamed chat through raw HTTP: what the client receives, byte for byte, and what the gateway accounts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from tests.support.fixtures import load_fixture, sse_data, sse_event_name
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream, Scenario

from .helpers import MESSAGES, events_of, expected_after_strip, payloads_of, record_numbers, usage_numbers

INCLUDE_USAGE = {"include_usage": True}


async def post_stream(gateway: Gateway, model: str, **extra: Any) -> tuple[int, dict[str, str], bytes]:
    body = {"model": model, "messages": MESSAGES, "stream": True, **extra}
    async with gateway.http.post("v1/chat/completions", json=body) as resp:
        return resp.status, dict(resp.headers), await resp.read()


# -- pass-through: the client asked for usage, so the stream is exactly the provider's ------------------

PASS_THROUGH = [
    "openai/chat-completions/stream-parallel-tool-calls-include-usage-gpt4o",
    "openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini",
    "openai/chat-completions/stream-tool-call-args-deltas-include-usage-gpt4o",
    "openai/chat-completions/stream-tool-call-include-usage-gpt4o-mini",
    "openai/chat-completions/stream-text-no-usage-gpt4o-mini",
    "groq/chat-completions/stream-text-x-groq-usage-llama3.3-70b",
    "groq/chat-completions/stream-tool-call-x-groq-usage-gpt-oss-120b",
    "groq/chat-completions/stream-reasoning-then-midstream-error-event-tool-use-failed",
    "groq/chat-completions/stream-tool-call-x-groq",
    "openrouter/chat-completions/stream-processing-comments-midstream-error-chunk",
    "openrouter/chat-completions/stream-processing-comments-usage-cost-claude",
    "openrouter/chat-completions/stream-reasoning-details-claude-sonnet45",
    "xai/chat-completions/stream-reasoning-content-grok3-mini",
    "xai/chat-completions/stream-reasoning-then-tool-call-include-usage-grok3-mini",
]


@pytest.mark.parametrize("split", ["events", "bytes"])
@pytest.mark.parametrize("fixture", PASS_THROUGH)
async def test_stream_is_byte_exact_when_client_asked_for_usage(
    gateway: Gateway, mock_upstream: MockUpstream, fixture: str, split: str
) -> None:
    fx = load_fixture(fixture)
    mock_upstream.replay("m", fx, split=split)
    status, headers, body = await post_stream(gateway, "up/m", stream_options=INCLUDE_USAGE)
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert body == fx.body
    assert mock_upstream.last("m").json["stream_options"] == INCLUDE_USAGE
    record = await gateway.record(headers["X-Request-ID"])
    if fx.usage is not None:
        assert record_numbers(record) == usage_numbers(fx.usage)
        assert not record.usage.estimated


# -- usage injected by the gateway, removed again before the client sees it ----------------------------

INJECTED = [
    "openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini",
    "openai/chat-completions/stream-parallel-tool-calls-include-usage-gpt4o",
    "openai/chat-completions/stream-tool-call-args-deltas-include-usage-gpt4o",
    "openai/chat-completions/stream-tool-call-include-usage-gpt4o-mini",
    "openrouter/chat-completions/stream-processing-comments-usage-cost-claude",
    "xai/chat-completions/stream-reasoning-then-tool-call-include-usage-grok3-mini",
]


@pytest.mark.parametrize("split", ["events", "bytes"])
@pytest.mark.parametrize("fixture", INJECTED)
async def test_injected_usage_is_stripped_and_accounted(
    gateway: Gateway, mock_upstream: MockUpstream, fixture: str, split: str
) -> None:
    fx = load_fixture(fixture)
    assert fx.usage is not None
    mock_upstream.replay("m", fx, split=split)
    status, headers, body = await post_stream(gateway, "up/m")
    assert status == 200
    # The gateway asked the provider for usage...
    assert mock_upstream.last("m").json["stream_options"] == INCLUDE_USAGE
    # ...and the client, which did not, sees the provider's events without what that request added.
    assert payloads_of(body) == expected_after_strip(fx)
    assert len(payloads_of(body)) == len(fx.data_payloads) - 1
    assert b'"usage":null' not in body
    assert b'"choices":[]' not in body
    assert body.endswith(b"data: [DONE]\n\n") and body.count(b"[DONE]") == 1
    # Events untouched by the stripping are forwarded byte for byte (comments included).
    untouched = [e for e in fx.events if b'"usage"' not in e]
    sent = events_of(body)
    assert all(e in sent for e in untouched)
    record = await gateway.record(headers["X-Request-ID"])
    assert record.outcome == "ok" and record.status == 200 and record.stream
    assert record_numbers(record) == usage_numbers(fx.usage)
    assert not record.usage.estimated


async def test_client_stream_options_are_kept_when_usage_is_injected(
    gateway: Gateway, mock_upstream: MockUpstream
) -> None:
    fx = load_fixture("openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini")
    mock_upstream.replay("m", fx)
    status, _, body = await post_stream(
        gateway, "up/m", stream_options={"include_usage": False, "include_obfuscation": True}
    )
    assert status == 200
    assert mock_upstream.last("m").json["stream_options"] == {"include_usage": True, "include_obfuscation": True}
    assert payloads_of(body) == expected_after_strip(fx)


async def test_no_injection_when_the_provider_disables_stream_usage(
    make_gateway: Any, mock_upstream: MockUpstream
) -> None:
    gateway = await make_gateway(upstream=mock_upstream, stream_usage=False)
    fx = load_fixture("openai/chat-completions/stream-text-no-usage-gpt4o-mini")
    mock_upstream.replay("m", fx)
    status, headers, body = await post_stream(gateway, "up/m")
    assert status == 200 and body == fx.body
    assert "stream_options" not in mock_upstream.last("m").json
    record = await gateway.record(headers["X-Request-ID"])
    assert record.usage is not None and record.usage.estimated  # the provider sent no usage: estimated


async def test_stream_reaches_the_client_before_the_upstream_finishes(
    gateway: Gateway, mock_upstream: MockUpstream
) -> None:
    """No buffering: the first events arrive while the provider is still busy with the rest."""
    fx = load_fixture("openai/chat-completions/stream-text-no-usage-gpt4o-mini")
    mock_upstream.replay("m", fx, stall_after=2, stall_s=3.0)
    body = {"model": "up/m", "messages": MESSAGES, "stream": True, "stream_options": INCLUDE_USAGE}
    async with gateway.http.post("v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        received = b""
        first_two = b"".join(fx.events[:2])
        async with asyncio.timeout(1.5):
            while len(received) < len(first_two):
                received += await resp.content.readany()
        assert received == first_two
        assert not mock_upstream.last("m").done.is_set()


# -- provider specifics ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fixture", [
    "groq/chat-completions/stream-tool-call-x-groq",
    "groq/chat-completions/stream-text-x-groq-usage-llama3.3-70b",
])
async def test_groq_x_groq_usage_is_accounted(gateway: Gateway, mock_upstream: MockUpstream, fixture: str) -> None:
    """Groq puts usage in ``x_groq.usage`` (and lately also at the top level): the former alone must do."""
    fx = load_fixture(fixture)
    last = fx.data_payloads[-1]
    x_usage = last["x_groq"]["usage"]
    # The recording with its top-level usage removed, as older Groq streams were: only x_groq carries it.
    only_x_groq = [{k: v for k, v in p.items() if k != "usage"} for p in fx.data_payloads]
    mock_upstream.on("llama", Scenario.sse([*only_x_groq, "[DONE]"]))
    status, headers, body = await post_stream(gateway, "up/llama")
    assert status == 200 and payloads_of(body) == only_x_groq
    record = await gateway.record(headers["X-Request-ID"])
    assert not record.usage.estimated
    assert (record.usage.input_tokens, record.usage.output_tokens) == (
        x_usage["prompt_tokens"], x_usage["completion_tokens"]
    )


async def test_openrouter_comments_and_error_chunk(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    fx = load_fixture("openrouter/chat-completions/stream-processing-comments-midstream-error-chunk")
    comments = [e for e in fx.events if e.startswith(b": OPENROUTER PROCESSING")]
    assert len(comments) >= 10
    mock_upstream.replay("minimax", fx)
    status, headers, body = await post_stream(gateway, "up/minimax")
    assert status == 200
    assert body == fx.body  # comments included, byte for byte; the stripped usage was none here
    record = await gateway.record(headers["X-Request-ID"])
    assert record.outcome == "upstream_error"

    client = gateway.async_openai()
    with pytest.raises(openai.APIError) as caught:
        async for _ in await client.chat.completions.create(
            model="up/minimax", messages=MESSAGES, stream=True, extra_headers={"X-Request-ID": "or-err"}
        ):
            pass
    assert caught.value.message == "Token limit reached"
    assert (await gateway.record("or-err")).outcome == "upstream_error"


async def test_groq_error_event_mid_stream(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    fx = load_fixture("groq/chat-completions/stream-reasoning-then-midstream-error-event-tool-use-failed")
    error_event = fx.events[-1]
    assert sse_event_name(error_event) == "error"
    message = json.loads(sse_data(error_event) or b"")["error"]["message"]
    mock_upstream.replay("gpt-oss", fx)
    status, headers, body = await post_stream(gateway, "up/gpt-oss")
    assert status == 200
    # Forwarded as it came: the provider's error is the end; no [DONE] and no second error invented.
    assert body == fx.body
    assert b"[DONE]" not in body
    record = await gateway.record(headers["X-Request-ID"])
    assert record.outcome == "upstream_error"

    client = gateway.openai()

    def consume() -> None:
        for _ in client.chat.completions.create(
            model="up/gpt-oss", messages=MESSAGES, stream=True, extra_headers={"X-Request-ID": "groq-err"}
        ):
            pass

    with pytest.raises(openai.APIError) as caught:
        await asyncio.to_thread(consume)
    assert caught.value.message == message
    assert (await gateway.record("groq-err")).outcome == "upstream_error"


@pytest.mark.parametrize("stream_options", [INCLUDE_USAGE, None], ids=["include_usage", "no_usage_option"])
async def test_xai_reasoning_content_stream_byte_exact(
    gateway: Gateway, mock_upstream: MockUpstream, stream_options: dict[str, Any] | None
) -> None:
    fx = load_fixture("xai/chat-completions/stream-reasoning-content-grok3-mini")
    assert len(fx.events) > 250
    mock_upstream.replay("grok-3-mini", fx, split="bytes" if stream_options else "events")
    extra = {"stream_options": stream_options} if stream_options else {}
    status, headers, body = await post_stream(gateway, "up/grok-3-mini", **extra)
    assert status == 200
    assert body == fx.body
    reasoning = "".join(
        (c.get("delta") or {}).get("reasoning_content") or "" for p in payloads_of(body) for c in p["choices"]
    )
    assert len(reasoning) > 100
    record = await gateway.record(headers["X-Request-ID"])
    assert record.outcome == "ok"
    # xAI sent no usage in this recording: the gateway estimates it and says so.
    assert record.usage is not None and record.usage.estimated and record.usage.output_tokens > 0


async def test_timeout_is_an_idle_limit_not_a_deadline(make_gateway: Any, mock_upstream: MockUpstream) -> None:
    """A slow but steady stream outlives ``timeout_s``: the limit is on silence, not on the whole answer."""
    gateway = await make_gateway(upstream=mock_upstream, timeout_s=0.4)
    fx = load_fixture("openai/chat-completions/stream-text-no-usage-gpt4o-mini")
    mock_upstream.replay("m", fx, max_pieces=8, chunk_delay=0.12)
    assert len(Scenario.from_fixture(fx, max_pieces=8).split_body()) >= 5  # >= 0.48 s in all
    status, headers, body = await post_stream(gateway, "up/m", stream_options=INCLUDE_USAGE)
    assert status == 200 and body == fx.body
    assert (await gateway.record(headers["X-Request-ID"])).outcome == "ok"


async def test_concurrent_streams_do_not_mix(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    fixtures = {f"m{i}": load_fixture(name) for i, name in enumerate(PASS_THROUGH[:8])}
    for model, fx in fixtures.items():
        mock_upstream.replay(model, fx, split="bytes")
    results = await asyncio.gather(
        *(post_stream(gateway, f"up/{model}", stream_options=INCLUDE_USAGE) for model in fixtures for _ in range(2))
    )
    expected = [fx.body for fx in fixtures.values() for _ in range(2)]
    assert [body for _, _, body in results] == expected
    assert len({headers["X-Request-ID"] for _, headers, _ in results}) == len(results)
