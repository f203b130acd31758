"""The credential store's interface (architecture: ``CredentialStore.get_provider_keys(provider)``).

A store answers, for a provider's name, the keys it holds now (plain strings, in order; none: ``[]``).
It is read at start-up and on every reload, so a key changed in the store is used by the next request
once reloaded. A store never logs a key, and its errors never contain one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable


class CredentialError(Exception):
    """The store cannot be read, or holds something unusable; the message names the source and the fix."""


@runtime_checkable
class CredentialStore(Protocol):
    #: ``env``, ``file``, ``postgres`` or ``vault`` (``credentials.source``), for messages.
    source: str

    async def open(self) -> None:
        """Connect / read what is needed before the first ``get_provider_keys`` (raises ``CredentialError``)."""

    async def get_provider_keys(self, provider: str) -> list[str]:
        """The keys the store holds for ``provider`` now; ``[]`` when it holds none."""

    async def close(self) -> None:
        """Release connections (idempotent)."""

    def describe(self) -> str:
        """Where the keys are read from, for messages (never a secret)."""


def key_list(value: Any, where: str) -> list[str]:
    """``api_key`` / ``api_keys`` as a list: a string (comma-separated allowed), a list of strings or of
    ``{key: ...}`` mappings. Raises ``CredentialError`` naming ``where`` (never the value) otherwise."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, Iterable) and not isinstance(value, (bytes, dict)) and not hasattr(value, "keys"):
        out: list[str] = []
        for i, entry in enumerate(value):
            item = entry.get("key") if hasattr(entry, "get") and isinstance(entry.get("key"), str) else entry
            if not isinstance(item, str):
                raise CredentialError(
                    f"{where}[{i}]: expected a key (a string) or {{key: ...}}, got {type(item).__name__} "
                    "(not shown: it may be a secret)"
                )
            if item.strip():
                out.append(item.strip())
        return out
    raise CredentialError(
        f"{where}: expected a key, a comma-separated string or a list of keys, got {type(value).__name__} "
        "(not shown: it may be a secret)"
    )


def provider_keys(entry: Any, where: str) -> list[str]:
    """A provider's entry of a store: ``{api_key, api_keys}``, or directly a key or a list of keys;
    each key once, in order."""
    if entry is None:
        return []
    if hasattr(entry, "get") and hasattr(entry, "keys"):
        unknown = sorted(str(k) for k in entry if k not in ("api_key", "api_keys"))
        if unknown:
            raise CredentialError(f"{where}: unknown key '{unknown[0]}'; accepted here: api_key, api_keys")
        keys = key_list(entry.get("api_key"), f"{where}.api_key") + key_list(entry.get("api_keys"), f"{where}.api_keys")
    else:
        keys = key_list(entry, where)
    return list(dict.fromkeys(keys))
