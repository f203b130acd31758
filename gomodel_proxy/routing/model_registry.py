"""Model -> provider resolution, from each provider's model list.

Lists are fetched at start-up and refreshed in the background; the last good lists are kept on local
disk so a restart resolves models at once, with no network. The gateway is ready once every provider
has either answered or failed visibly (logged and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson

from gomodel_proxy.core.errors import ModelNotFoundError
from gomodel_proxy.core.interfaces import Provider
from gomodel_proxy.core.types import ModelInfo
from gomodel_proxy.observability.metrics import Metrics


class ModelRegistry:
    def __init__(
        self,
        providers: dict[str, Provider],
        *,
        cache_file: Path | None,
        refresh_s: float,
        fetch_timeout_s: float,
        metrics: Metrics,
        logger: Any,
    ) -> None:
        self.providers = providers
        self._cache_file = cache_file
        self._refresh_s = refresh_s
        self._fetch_timeout_s = fetch_timeout_s
        self._metrics = metrics
        self._log = logger
        self._lists: dict[str, list[ModelInfo]] = {}
        self._bare: dict[str, tuple[Provider, str]] = {}
        #: Per provider: "pending", "ok", "cached" (from disk, fetch failed) or "failed".
        self.status: dict[str, str] = dict.fromkeys(providers, "pending")
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- resolution (hot path) ------------------------------------------------------------------
    def resolve(self, model: str) -> tuple[Provider, str]:
        """The provider and the provider's own model id for ``model``.

        ``provider/model`` goes to that provider (the provider decides whether it knows the model);
        a bare name goes to the first provider, in configuration order, whose list holds it.
        """
        prefix, sep, rest = model.partition("/")
        if sep and rest:
            provider = self.providers.get(prefix)
            if provider is not None:
                return provider, rest
        found = self._bare.get(model)
        if found is not None:
            return found
        raise ModelNotFoundError(
            f"The model '{model}' does not exist or is not served by any configured provider. "
            "List the available models with GET /v1/models, or name the provider explicitly as "
            "'provider/model'.",
            param="model",
        )

    def models(self) -> list[ModelInfo]:
        return [m for name in self.providers for m in self._lists.get(name, [])]

    def find(self, model_id: str) -> ModelInfo | None:
        prefix, _, rest = model_id.partition("/")
        for m in self._lists.get(prefix, []):
            if m.id == rest:
                return m
        found = self._bare.get(model_id)
        if found is not None:
            provider, bare = found
            return next((m for m in self._lists.get(provider.name, []) if m.id == bare), None)
        return None

    def _rebuild(self) -> None:
        bare: dict[str, tuple[Provider, str]] = {}
        for name, provider in self.providers.items():
            for m in self._lists.get(name, []):
                bare.setdefault(m.id, (provider, m.id))
        self._bare = bare
        for name in self.providers:
            self._metrics.provider_models.labels(name).set(len(self._lists.get(name, [])))

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._load_cache()
        if not self.providers:
            self.ready.set()
        self._task = asyncio.create_task(self._run(), name="model-registry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> None:
        """Fetch every provider's list once, concurrently."""
        await asyncio.gather(*(self._fetch(name, p) for name, p in self.providers.items()))
        self._rebuild()
        if self._cache_file is not None:
            await asyncio.to_thread(self._write_cache, self._cache_file, self._cache_payload())

    async def _run(self) -> None:
        while True:
            await self.refresh()
            self.ready.set()
            await asyncio.sleep(self._refresh_s)

    async def _fetch(self, name: str, provider: Provider) -> None:
        try:
            async with asyncio.timeout(self._fetch_timeout_s):
                models = await provider.list_models()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._metrics.model_list_failures.labels(name).inc()
            cached = name in self._lists
            self.status[name] = "cached" if cached else "failed"
            self._log.warning(
                "model list unavailable", provider=name, error=str(exc) or type(exc).__name__,
                using="the list cached on disk" if cached else "nothing: only 'provider/model' ids reach it",
            )
            return
        self._lists[name] = models
        self.status[name] = "ok"

    # -- disk cache -----------------------------------------------------------------------------
    def _load_cache(self) -> None:
        if self._cache_file is None or not self._cache_file.is_file():
            return
        try:
            data = orjson.loads(self._cache_file.read_bytes())
            for name, items in data.get("providers", {}).items():
                if name in self.providers:
                    self._lists[name] = [
                        ModelInfo(id=i["id"], provider=name, owned_by=i.get("owned_by", ""),
                                  created=int(i.get("created", 0)))
                        for i in items
                    ]
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            self._log.warning("model cache unreadable; ignoring it", path=str(self._cache_file), error=str(exc))
            self._lists.clear()
        self._rebuild()

    def _cache_payload(self) -> bytes:
        return orjson.dumps({
            "providers": {
                name: [{"id": m.id, "owned_by": m.owned_by, "created": m.created} for m in models]
                for name, models in self._lists.items()
            }
        })

    def _write_cache(self, path: Path, payload: bytes) -> None:
        """Runs in a thread: file I/O stays off the event loop."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written to a temporary file and renamed, so that concurrent workers never read half a file.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".models-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            os.replace(tmp, path)
        except OSError as exc:
            self._log.warning("model cache not written", path=str(path), error=str(exc))
