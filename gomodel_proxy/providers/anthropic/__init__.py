"""Anthropic's Messages API: native for Anthropic clients, translated for OpenAI ones."""

from gomodel_proxy.providers.anthropic.provider import AnthropicProvider

__all__ = ["AnthropicProvider"]
