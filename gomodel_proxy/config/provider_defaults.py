"""Defaults per provider type: where it lives and which environment variables register it.

``OPENAI_API_KEY=sk-... gomodel-proxy`` registers an ``openai`` provider with these defaults when the
config file has no provider of that name; ``<NAME>_BASE_URL`` moves it (a proxy, a regional endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProviderDefaults:
    base_url: str
    #: Environment variable holding the key; registers the provider by itself when set.
    env_key: str | None
    needs_key: bool


PROVIDER_DEFAULTS: dict[str, ProviderDefaults] = {
    "openai": ProviderDefaults("https://api.openai.com/v1", "OPENAI_API_KEY", needs_key=True),
    "groq": ProviderDefaults("https://api.groq.com/openai/v1", "GROQ_API_KEY", needs_key=True),
    "xai": ProviderDefaults("https://api.x.ai/v1", "XAI_API_KEY", needs_key=True),
    "openrouter": ProviderDefaults("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", needs_key=True),
    "anthropic": ProviderDefaults("https://api.anthropic.com/v1", "ANTHROPIC_API_KEY", needs_key=True),
    "gemini": ProviderDefaults(
        "https://generativelanguage.googleapis.com/v1beta", "GEMINI_API_KEY", needs_key=True
    ),
    # Azure resources have no common host: AZURE_OPENAI_BASE_URL (the resource endpoint) is needed too.
    "azure": ProviderDefaults("", "AZURE_OPENAI_API_KEY", needs_key=True),
    "openai_compatible": ProviderDefaults("", None, needs_key=False),
    "mock": ProviderDefaults("", None, needs_key=False),
}
