"""The HTTP client every remote provider uses, configured from the provider's settings.

It is the gateway's own client (``gomodel_proxy.httpclient``): a keep-alive pool per provider over asyncio
protocols and llhttp. Its failures already are the gateway's 502/504 errors, naming the provider, so nothing
above this module wraps its calls.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gomodel_proxy.config.schema import ProviderConfig
from gomodel_proxy.core.errors import GatewayError
from gomodel_proxy.httpclient import HttpClient, Response
from gomodel_proxy.httpclient.client import HeaderItems
from gomodel_proxy.llmclient import BEARER, AuthScheme, Keyring, LLMClient
from gomodel_proxy.observability.logging import get_logger

#: A provider's answer whose body has not been read yet (``core.interfaces.UpstreamResponse``).
HttpUpstreamResponse = Response

#: How long an idle connection to a provider stays open for reuse.
KEEPALIVE_S = 60.0


def make_client(name: str, config: ProviderConfig, *, headers: HeaderItems = ()) -> HttpClient:
    """The provider's client: its base URL, timeouts and connection cap, and headers fixed for every request.

    Raises ``ValueError`` naming the provider for a base URL or header the client cannot send.
    """
    try:
        return HttpClient(
            config.base_url,
            name=name,
            connect_timeout_s=config.connect_timeout_s,
            read_timeout_s=config.timeout_s,
            max_connections=config.max_connections,
            keepalive_s=KEEPALIVE_S,
            headers=headers,
        )
    except ValueError as exc:
        raise ValueError(f"provider '{name}': {exc}") from None


def make_llm_client(
    name: str, config: ProviderConfig, *, headers: HeaderItems = (), auth: AuthScheme = BEARER
) -> LLMClient:
    """The provider's sending side: its HTTP client, its keyring (keys sent as ``auth``), retries, breakers.

    ``headers`` are fixed for every request and hold no key: each request adds the key the keyring picks.
    """
    logger = get_logger("gomodel_proxy.llmclient")
    keyring = Keyring(
        name, [k for k in [config.api_key, *config.api_keys] if k], auth, strategy=config.key_strategy,
        breaker=config.circuit_breaker, clock=time.monotonic, logger=logger,
    )
    return LLMClient(
        make_client(name, config, headers=headers), keyring, retry=config.retry, breaker=config.circuit_breaker,
        logger=logger,
    )


async def read_model_page(response: Response, provider: str, list_key: str) -> dict[str, Any]:
    """A provider's model-list page, read whole and checked: a JSON object whose ``list_key`` is a list.

    Every remote provider lists its models this way (with its own key: ``data`` or ``models``); a failure
    names the provider and is shown as that provider's model-list status on ``/ready``.
    """
    try:
        raw = await response.read()
    finally:
        response.release()
    if response.status != 200:
        raise GatewayError(f"listing models of '{provider}' failed with HTTP {response.status}")
    try:
        page = orjson.loads(raw)
    except orjson.JSONDecodeError:
        page = None
    if not isinstance(page, dict) or not isinstance(page.get(list_key, []), list):
        raise GatewayError(f"provider '{provider}' answered its model list in an unknown shape")
    return page
