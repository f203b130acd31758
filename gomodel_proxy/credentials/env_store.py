"""``credentials.source: env`` (the default): the keys written in the configuration.

That is each provider's ``api_key`` / ``api_keys`` (usually ``${OPENAI_API_KEY}`` and the like, expanded
when the configuration is loaded), and the providers added from ``<TYPE>_API_KEY`` variables. The store
reads the *running* configuration (a getter), so a key changed in the configuration file and applied by a
configuration reload (SIGHUP) reaches the keyrings on the credentials reload that follows. A process's own
environment cannot be changed from outside: a key that only the environment gives changes with a restart.
"""

from __future__ import annotations

from collections.abc import Callable

from gomodel_proxy.config.schema import Config, KeyConfig


class EnvStore:
    source = "env"

    def __init__(self, config: Config | Callable[[], Config]) -> None:
        self._current: Callable[[], Config] = config if callable(config) else (lambda: config)

    async def open(self) -> None:
        return None

    async def get_provider_keys(self, provider: str) -> list[str]:
        pc = self._current().providers.get(provider)
        if pc is None:
            return []
        keys = [pc.api_key, *(k.key if isinstance(k, KeyConfig) else k for k in pc.api_keys)]
        return list(dict.fromkeys(k for k in keys if k))

    async def close(self) -> None:
        return None

    def describe(self) -> str:
        return f"the environment / {self._current().source}"
