"""A built-in provider with no network, for demos, smoke tests and load tests."""

from gomodel_proxy.providers.mock.provider import MockProvider

__all__ = ["MockProvider"]
