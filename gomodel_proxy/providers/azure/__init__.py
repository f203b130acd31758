"""Azure OpenAI: OpenAI's API on per-deployment URLs, with an ``api-key`` header and an ``api-version``."""

from gomodel_proxy.providers.azure.provider import AzureOpenAIProvider

__all__ = ["AzureOpenAIProvider"]
