"""Provider types and their factories: a new provider is one folder and one line here."""

from __future__ import annotations

from collections.abc import Callable

from gomodel_proxy.config.schema import ProviderConfig
from gomodel_proxy.core.interfaces import Provider
from gomodel_proxy.providers.anthropic import AnthropicProvider
from gomodel_proxy.providers.azure import AzureOpenAIProvider
from gomodel_proxy.providers.gemini import GeminiProvider
from gomodel_proxy.providers.mock import MockProvider
from gomodel_proxy.providers.openai import OpenAICompatibleProvider

ProviderFactory = Callable[[str, ProviderConfig], Provider]

PROVIDER_TYPES: dict[str, ProviderFactory] = {
    "openai": OpenAICompatibleProvider,
    "groq": OpenAICompatibleProvider,
    "xai": OpenAICompatibleProvider,
    "openrouter": OpenAICompatibleProvider,
    "openai_compatible": OpenAICompatibleProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
    "azure": AzureOpenAIProvider,
    "mock": MockProvider,
}


def build_provider(name: str, config: ProviderConfig) -> Provider:
    return PROVIDER_TYPES[config.type](name, config)
