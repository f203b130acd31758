"""OpenAI and every server that speaks its API (Groq, xAI, OpenRouter, vLLM, Ollama, ...)."""

from gomodel_proxy.providers.openai.provider import OpenAICompatibleProvider

__all__ = ["OpenAICompatibleProvider"]
