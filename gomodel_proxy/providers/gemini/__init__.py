"""Google's Gemini API (generativelanguage v1beta), reached through the OpenAI API by translation."""

from gomodel_proxy.providers.gemini.provider import GeminiProvider

__all__ = ["GeminiProvider"]
