"""``credentials.source: file``: providers' keys in a YAML file, read again whenever it changes.

    providers:
      openai: {api_key: sk-...}
      groq:
        api_keys: [gsk-1, gsk-2]       # or a comma-separated string
      anthropic: sk-ant-...            # short form: the key (or a list of keys) itself

The file is read at start-up (missing or invalid: the gateway does not start, the message names the file
and the line) and again on each ``get_provider_keys`` once its modification time, size or inode changed
(an editor's atomic rename counts). A file that turns invalid keeps the keys read last, and the reload
reports the error. Keep it readable by the gateway's user only: a file others may read is logged once.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from gomodel_proxy.credentials.interface import CredentialError, provider_keys

#: A file modified this recently (seconds) is read again on the next look even if it seems unchanged.
RACY_S = 2.0


class FileStore:
    source = "file"

    def __init__(self, path: str | os.PathLike[str], *, logger: Any = None) -> None:
        self.path = Path(path)
        self.logger = logger
        self._keys: dict[str, list[str]] = {}
        #: (mtime_ns, size, inode) of the file last read; ``None``: never read.
        self._signature: tuple[int, int, int] | None = None
        #: The file changed within the last ``RACY_S`` when last read: a change made within the same clock
        #: tick would leave the signature as it was, so it is read again until it is older (as git does).
        self._racy = False
        self._lock = asyncio.Lock()
        self.loads = 0

    async def open(self) -> None:
        await self._refresh()

    async def get_provider_keys(self, provider: str) -> list[str]:
        await self._refresh()
        return list(self._keys.get(provider, ()))

    async def close(self) -> None:
        return None

    def describe(self) -> str:
        return f"credentials file {self.path}"

    async def _refresh(self) -> None:
        """Read the file again when it changed since it was last read."""
        try:
            st = self.path.stat()
        except OSError as exc:
            raise CredentialError(
                f"{self.path}: cannot read the credentials file ({exc.strerror or exc}); create it, or fix "
                "credentials.file"
            ) from None
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature == self._signature and not self._racy:
            return
        async with self._lock:
            if signature == self._signature and not self._racy:
                return
            keys = await asyncio.to_thread(self._read)
            first = self._signature is None
            self._keys, self._signature = keys, signature
            self._racy = time.time() - st.st_mtime < RACY_S
            self.loads += 1
            if first and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and self.logger is not None:
                self.logger.warning(
                    "credentials file readable by others", path=str(self.path),
                    fix=f"chmod 600 {self.path}",
                )

    def _read(self) -> dict[str, list[str]]:
        where = str(self.path)
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CredentialError(f"{where}: cannot read the credentials file ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise CredentialError(f"{where}: not UTF-8 text; save the file as UTF-8") from None
        try:
            data = YAML(typ="safe").load(text)
        except MarkedYAMLError as exc:
            mark = exc.problem_mark
            at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else where
            raise CredentialError(f"{at}: not valid YAML: {exc.problem or exc.context}") from None
        except YAMLError as exc:
            raise CredentialError(f"{where}: not valid YAML ({type(exc).__name__})") from None
        if data is None:
            return {}
        if not isinstance(data, Mapping) or not isinstance(data.get("providers", {}), Mapping):
            raise CredentialError(
                f"{where}: expected a mapping 'providers: {{<name>: {{api_key: ..., api_keys: [...]}}}}'"
            )
        unknown = [str(k) for k in data if k != "providers"]
        if unknown:
            raise CredentialError(f"{where}: unknown top-level key '{unknown[0]}'; the file holds 'providers:' only")
        providers = data.get("providers") or {}
        return {str(name): provider_keys(entry, f"{where}: providers.{name}") for name, entry in providers.items()}
