"""The gateway in front of the real providers, through the official SDK.

Runs only where a provider's key is in the environment; elsewhere (CI has no keys and no route to the
providers) each test skips and says which variable it needs.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from aiohttp.test_utils import TestServer

from gomodel_proxy.config import load_config
from gomodel_proxy.server.app import create_app

#: provider type -> (key variable, a small, cheap chat model, an embeddings model or None)
PROVIDERS = {
    "openai": ("OPENAI_API_KEY", "gpt-4o-mini", "text-embedding-3-small"),
    "groq": ("GROQ_API_KEY", "llama-3.1-8b-instant", None),
    "xai": ("XAI_API_KEY", "grok-3-mini", None),
    "openrouter": ("OPENROUTER_API_KEY", "openai/gpt-4o-mini", None),
}


def _params() -> list[object]:
    out = []
    for name, (var, model, embed) in PROVIDERS.items():
        mark = pytest.mark.skipif(not os.environ.get(var), reason=f"{var} is not set: no real {name} calls")
        out.append(pytest.param(name, model, embed, marks=[mark, pytest.mark.integration], id=name))
    return out


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[str]:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"cache:\n  dir: {tmp_path / 'cache'}\n")
    config = load_config(config_file)  # providers registered from the environment's keys
    server = TestServer(create_app(config), handler_cancellation=True)
    await server.start_server()
    try:
        yield str(server.make_url("/v1"))
    finally:
        await server.close()


@pytest.mark.parametrize(("provider", "model", "embed_model"), _params())
async def test_chat_stream_and_embeddings(gateway: str, provider: str, model: str, embed_model: str | None) -> None:
    client = openai.AsyncOpenAI(base_url=gateway, api_key="unused", max_retries=0)
    qualified = f"{provider}/{model}"
    reply = await client.chat.completions.create(
        model=qualified, messages=[{"role": "user", "content": "Say the word 'pong' and nothing else."}],
        max_tokens=10,
    )
    assert "pong" in (reply.choices[0].message.content or "").lower()
    assert reply.usage is not None and reply.usage.completion_tokens > 0

    stream = await client.chat.completions.create(
        model=qualified, messages=[{"role": "user", "content": "Count from 1 to 5."}], max_tokens=40, stream=True,
    )
    text, usage_seen = "", False
    async for chunk in stream:
        usage_seen = usage_seen or chunk.usage is not None
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert "3" in text
    if provider == "openai":  # Groq and OpenRouter send usage unasked; OpenAI only when asked
        assert not usage_seen, "the client did not ask for usage and must not get it"

    if embed_model:
        emb = await client.embeddings.create(model=f"{provider}/{embed_model}", input=["hello"])
        assert len(emb.data[0].embedding) > 100
