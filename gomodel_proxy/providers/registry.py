"""Provider types and their factories: a new provider is one folder and one line here.

A type's module is imported when a provider of that type is built: a gateway that uses only OpenAI-style
providers never loads the Gemini or Anthropic translators (start-up time).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from gomodel_proxy.config.schema import ProviderConfig
from gomodel_proxy.core.interfaces import Provider

ProviderFactory = Callable[[str, ProviderConfig], Provider]

#: Provider type -> "module:class" of its factory.
PROVIDER_TYPES: dict[str, str] = {
    "openai": "gomodel_proxy.providers.openai:OpenAICompatibleProvider",
    "groq": "gomodel_proxy.providers.openai:OpenAICompatibleProvider",
    "xai": "gomodel_proxy.providers.openai:OpenAICompatibleProvider",
    "openrouter": "gomodel_proxy.providers.openai:OpenAICompatibleProvider",
    "openai_compatible": "gomodel_proxy.providers.openai:OpenAICompatibleProvider",
    "anthropic": "gomodel_proxy.providers.anthropic:AnthropicProvider",
    "gemini": "gomodel_proxy.providers.gemini:GeminiProvider",
    "azure": "gomodel_proxy.providers.azure:AzureOpenAIProvider",
    "mock": "gomodel_proxy.providers.mock:MockProvider",
}


def provider_factory(kind: str) -> ProviderFactory:
    module, _, name = PROVIDER_TYPES[kind].partition(":")
    factory: ProviderFactory = getattr(importlib.import_module(module), name)
    return factory


def build_provider(name: str, config: ProviderConfig) -> Provider:
    return provider_factory(config.type)(name, config)
