"""``CredentialManager``: providers' keys from the configured store, loaded at start-up and reloaded live.

- At start-up (before the providers serve) it reads every provider's keys from the store and puts them in
  the provider's keyring. A provider the store has no key for keeps the keys its configuration gives (if
  any: a warning says so); with a source other than ``env``, a provider that needs a key and has none at
  all is an error naming the provider and the source: the gateway does not start.
- ``reload()`` reads them again (on SIGHUP through ``state.credentials.reload()``, on
  ``POST /admin/credentials/reload``, and every ``credentials.reload_s``) and applies them with
  ``Keyring.replace_keys``: the next request uses the new set; a request in flight finishes with the key it
  holds; a key that stays keeps its breaker, rest and counters. A provider whose read fails, or that now
  gets no key, keeps the keys it has (the error is logged and reported).
- Only fingerprints (first 8 hex digits of a key's SHA-256) are ever logged or answered.

Weights and per-key limits: a key the store returns that is also written as a ``{key, weight, rpm, tpm}``
entry of the provider's ``api_keys`` keeps those settings; others get the defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gomodel_proxy.config.provider_defaults import PROVIDER_DEFAULTS
from gomodel_proxy.config.schema import Config, KeyConfig
from gomodel_proxy.core.interfaces import Provider
from gomodel_proxy.credentials.env_store import EnvStore
from gomodel_proxy.credentials.interface import CredentialError, CredentialStore
from gomodel_proxy.llmclient import LLMClient
from gomodel_proxy.llmclient.keyring import Keyring, fingerprint


def build_store(config: Config, logger: Any = None, current: Callable[[], Config] | None = None) -> CredentialStore:
    """The store ``credentials.source`` names (each imported only when used); ``current``: the running
    configuration, for ``env`` (default: ``config``)."""
    creds = config.credentials
    if creds.source == "file":
        from gomodel_proxy.credentials.file_store import FileStore  # noqa: PLC0415

        path = Path(creds.file)
        if not path.is_absolute() and config.source not in ("", "<defaults>"):
            path = Path(config.source).parent / path
        return FileStore(path, logger=logger)
    if creds.source == "postgres":
        from gomodel_proxy.credentials.postgres_store import PostgresStore  # noqa: PLC0415 - SQLAlchemy

        return PostgresStore.from_config(config)
    if creds.source == "vault":
        from gomodel_proxy.credentials.vault_store import VaultStore  # noqa: PLC0415

        return VaultStore(creds.vault, logger=logger)
    return EnvStore(current or config)


@dataclass(slots=True)
class ProviderReport:
    """One provider after a load: its keys' fingerprints now, and what changed."""

    provider: str
    fingerprints: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider, "keys": len(self.fingerprints), "fingerprints": self.fingerprints,
            "added": self.added, "removed": self.removed, "error": self.error,
        }


class CredentialManager:
    """Keeps the keyrings of ``providers`` filled from ``store``."""

    def __init__(self, config: Config, providers: dict[str, Provider], store: CredentialStore, *,
                 logger: Any = None, current: Callable[[], Config] | None = None) -> None:
        self.config = config
        #: The running configuration (a configuration reload replaces it): per-key settings are read there.
        self.current: Callable[[], Config] = current or (lambda: self.config)
        self.store = store
        self.logger = logger
        self.reload_s = config.credentials.reload_s
        #: The providers that send with a keyring (a mock provider has none), by name.
        self.keyrings: dict[str, Keyring] = {}
        for name, provider in providers.items():
            client = getattr(provider, "llm_client", None)
            if isinstance(client, LLMClient):
                self.keyrings[name] = client.keyring
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0
        self.last: list[ProviderReport] = []

    @classmethod
    def build(cls, config: Config, providers: dict[str, Provider], logger: Any = None,
              current: Callable[[], Config] | None = None) -> CredentialManager:
        """``current``: where the running configuration is read (``lambda: state.config``)."""
        return cls(config, providers, build_store(config, logger, current), logger=logger, current=current)

    @property
    def source(self) -> str:
        return self.store.source

    # -- life cycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store and load every provider's keys; raises ``CredentialError`` listing every provider
        left without a key (or the store's own error). Then reload every ``reload_s`` (not for ``env``)."""
        try:
            await self.store.open()
            reports = await self._load(initial=True)
        except BaseException:
            await self.store.close()
            raise
        problems = [r.error for r in reports if r.error]
        if problems:
            await self.store.close()
            raise CredentialError("; ".join(problems))
        if self.logger is not None:
            self.logger.info(
                "provider keys loaded", source=self.source,
                keys={r.provider: r.fingerprints for r in reports},
            )
        if self.reload_s > 0 and self.source != "env":
            self._task = asyncio.get_running_loop().create_task(self._every(self.reload_s))

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()

    async def _every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.reload(quiet=True)
            except Exception as exc:  # never let the loop die: the next round may succeed
                if self.logger is not None:
                    self.logger.error("credential reload failed", source=self.source,
                                      error=f"{type(exc).__name__}: {exc}"[:300])

    # -- loading ----------------------------------------------------------------------------------------
    async def reload(self, *, quiet: bool = False) -> list[ProviderReport]:
        """Read every provider's keys again and use them from the next request on; a report per provider.

        ``quiet``: log only changes and errors (the periodic reload)."""
        reports = await self._load(initial=False)
        self.reloads += 1
        if self.logger is not None:
            for r in reports:
                if r.error:
                    self.logger.error("provider keys not reloaded", provider=r.provider, source=self.source,
                                      error=r.error, kept=r.fingerprints)
                elif r.added or r.removed:
                    self.logger.info("provider keys reloaded", provider=r.provider, source=self.source,
                                     added=r.added, removed=r.removed, keys=r.fingerprints)
            if not quiet:
                self.logger.info("credentials reloaded", source=self.source,
                                 providers=len(reports), errors=sum(1 for r in reports if r.error))
        return reports

    async def _load(self, *, initial: bool) -> list[ProviderReport]:
        async with self._lock:
            reports: list[ProviderReport] = []
            for name, keyring in self.keyrings.items():
                reports.append(await self._load_one(name, keyring, initial=initial))
            self.last = reports
            return reports

    async def _load_one(self, name: str, keyring: Keyring, *, initial: bool) -> ProviderReport:
        report = ProviderReport(name)
        current = [k.fingerprint for k in keyring.keys if not k.keyless]
        pc = self.current().providers.get(name) or self.config.providers[name]
        try:
            keys = await self.store.get_provider_keys(name)
        except CredentialError as exc:
            report.error = f"provider '{name}': {exc}"
            report.fingerprints = current
            return report
        if not keys:
            report.fingerprints = current
            needs_key = PROVIDER_DEFAULTS[pc.type].needs_key
            if initial and current:
                # None in the store, some in the configuration (or from <TYPE>_API_KEY): those are used.
                if self.logger is not None and self.source != "env":
                    self.logger.warning("provider keys from the configuration: none in the store", provider=name,
                                        source=self.source, keys=current)
            elif initial and needs_key and self.source != "env":
                report.error = (
                    f"provider '{name}': no API key in {self.store.describe()} (credentials.source: {self.source}); "
                    f"store its key there, or remove the provider"
                )
            elif not initial and current:
                report.error = (
                    f"provider '{name}': no API key in {self.store.describe()} now; its {len(current)} current "
                    "key(s) are kept"
                )
            return report
        settings = {e.key: e for e in pc.api_keys if isinstance(e, KeyConfig)}
        entries: list[str | KeyConfig] = [settings.get(k, k) for k in keys]
        change = keyring.replace_keys(entries)
        report.fingerprints = [k.fingerprint for k in keyring.keys if not k.keyless]
        report.added, report.removed = change.added, change.removed
        return report

    def snapshot(self) -> dict[str, list[str]]:
        """Each provider's key fingerprints now."""
        return {name: [k.fingerprint for k in kr.keys if not k.keyless] for name, kr in self.keyrings.items()}


__all__ = ["CredentialManager", "ProviderReport", "build_store", "fingerprint"]
