"""The official ``anthropic`` SDK pointed at a gateway under test, sync and async, closed with it."""

from __future__ import annotations

import asyncio

import anthropic

from tests.support.gateway import CLIENT_KEY, Gateway


def anthropic_client(gateway: Gateway, api_key: str = CLIENT_KEY) -> anthropic.Anthropic:
    """The sync client; call it through ``asyncio.to_thread`` (the gateway shares the test's loop)."""
    client = anthropic.Anthropic(
        base_url=gateway.url, api_key=api_key, max_retries=0, timeout=15.0,
        # Plain HTTP: no TLS context to build (its certificate loading costs ~50 ms per client).
        http_client=anthropic.DefaultHttpxClient(verify=False),
    )

    async def close() -> None:
        await asyncio.to_thread(client.close)

    gateway._closers.append(close)
    return client


def async_anthropic_client(gateway: Gateway, api_key: str = CLIENT_KEY) -> anthropic.AsyncAnthropic:
    client = anthropic.AsyncAnthropic(
        base_url=gateway.url, api_key=api_key, max_retries=0, timeout=15.0,
        http_client=anthropic.DefaultAsyncHttpxClient(verify=False),
    )
    gateway._closers.append(client.close)
    return client
