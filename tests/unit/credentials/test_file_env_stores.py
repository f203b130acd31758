"""The environment store (the configuration's keys) and the YAML file store (read again when it changes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from gomodel_proxy.config.schema import Config, KeyConfig, ProviderConfig
from gomodel_proxy.credentials.env_store import EnvStore
from gomodel_proxy.credentials.file_store import FileStore
from gomodel_proxy.credentials.interface import CredentialError, CredentialStore, key_list, provider_keys


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def _add(self, level: str, event: str, **kw: Any) -> None:
        self.lines.append((level, event, kw))

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._add("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._add("error", event, **kw)


def age(path: Path, seconds: float = 60.0) -> None:
    """Make ``path`` look modified ``seconds`` ago (older than the racy window)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


async def test_env_store_answers_the_configured_keys() -> None:
    config = Config(providers={
        "openai": ProviderConfig(type="openai", api_key="sk-1", api_keys=["sk-2", KeyConfig(key="sk-3"), "sk-1"]),
        "local": ProviderConfig(type="openai_compatible", base_url="http://127.0.0.1:1/v1"),
    })
    store = EnvStore(config)
    assert isinstance(store, CredentialStore)
    await store.open()
    assert await store.get_provider_keys("openai") == ["sk-1", "sk-2", "sk-3"]
    assert await store.get_provider_keys("local") == []
    assert await store.get_provider_keys("nope") == []
    assert "environment" in store.describe()
    await store.close()


def test_key_lists_take_strings_lists_and_mappings_and_never_show_a_bad_value() -> None:
    assert key_list("a, b,,c", "x") == ["a", "b", "c"]
    assert key_list(["a", {"key": "b"}, " "], "x") == ["a", "b"]
    assert key_list(None, "x") == [] and key_list("", "x") == []
    with pytest.raises(CredentialError, match=r"x\[0\]: expected a key"):
        key_list([12345], "x")
    with pytest.raises(CredentialError, match="x: expected a key") as info:
        key_list(987654321, "x")
    assert "987654321" not in str(info.value)
    assert provider_keys({"api_key": "a", "api_keys": ["b", "a"]}, "p") == ["a", "b"]
    assert provider_keys(["a"], "p") == ["a"]
    with pytest.raises(CredentialError, match="unknown key 'apikey'"):
        provider_keys({"apikey": "a"}, "p")


async def test_file_store_reads_the_file_and_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("providers:\n  openai: {api_key: sk-old-1}\n  groq: [gsk-a, gsk-b]\n  anthropic: sk-ant\n")
    path.chmod(0o600)
    age(path)
    log = Log()
    store = FileStore(path, logger=log)
    await store.open()
    assert await store.get_provider_keys("openai") == ["sk-old-1"]
    assert await store.get_provider_keys("groq") == ["gsk-a", "gsk-b"]
    assert await store.get_provider_keys("anthropic") == ["sk-ant"]
    assert await store.get_provider_keys("other") == []
    assert store.loads == 1 and not log.lines  # mode 600: nothing to warn about
    await store.get_provider_keys("openai")
    assert store.loads == 1  # unchanged (and old): not read again
    # Same size, written in place: the modification time tells.
    path.write_text("providers:\n  openai: {api_key: sk-new-1}\n  groq: [gsk-a, gsk-b]\n  anthropic: sk-ant\n")
    assert await store.get_provider_keys("openai") == ["sk-new-1"]
    assert store.loads == 2
    # An editor's atomic rename (a new inode).
    tmp = tmp_path / "keys.yaml.tmp"
    tmp.write_text("providers:\n  openai:\n    api_keys: [sk-x, sk-y]\n")
    tmp.replace(path)
    assert await store.get_provider_keys("openai") == ["sk-x", "sk-y"]
    assert await store.get_provider_keys("groq") == []
    assert "keys.yaml" in store.describe()
    await store.close()


async def test_a_change_within_the_same_clock_tick_is_not_missed(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("providers: {up: {api_key: sk-aaaa}}\n")
    store = FileStore(path)
    assert await store.get_provider_keys("up") == ["sk-aaaa"]
    stamp = path.stat().st_mtime_ns
    path.write_text("providers: {up: {api_key: sk-bbbb}}\n")
    os.utime(path, ns=(stamp, stamp))  # same size, same inode, same mtime: only the racy check can tell
    assert await store.get_provider_keys("up") == ["sk-bbbb"]


async def test_an_invalid_file_fails_at_start_and_keeps_the_last_keys_later(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("providers:\n  up: {api_key: sk-good}\n")
    store = FileStore(path)
    await store.open()
    path.write_text("providers:\n  up: {api_key: [unclosed\n")
    with pytest.raises(CredentialError, match=r"keys.yaml:\d+:\d+: not valid YAML"):
        await store.get_provider_keys("up")
    path.write_text("providers:\n  up: {api_key: sk-good}\n")
    assert await store.get_provider_keys("up") == ["sk-good"]

    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("- a\n- b\n", "expected a mapping 'providers:"),
        ("providers: {}\nextra: 1\n", "unknown top-level key 'extra'"),
        ("providers:\n  up: {api_key: 5}\n", r"providers.up.api_key: expected a key"),
        ("providers: [1]\n", "expected a mapping"),
    ]:
        bad.write_text(text)
        with pytest.raises(CredentialError, match=message):
            await FileStore(bad).open()
    bad.write_bytes(b"providers: {up: \xff}\n")
    with pytest.raises(CredentialError, match="not UTF-8"):
        await FileStore(bad).open()
    bad.write_text("")
    empty = FileStore(bad)
    await empty.open()
    assert await empty.get_provider_keys("up") == []
    with pytest.raises(CredentialError, match=r"cannot read the credentials file.*credentials.file"):
        await FileStore(tmp_path / "missing.yaml").open()


async def test_a_file_others_may_read_is_logged_once_by_path(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("providers: {up: {api_key: sk-secret-value}}\n")
    path.chmod(0o644)
    log = Log()
    store = FileStore(path, logger=log)
    await store.open()
    assert [(lvl, ev) for lvl, ev, _ in log.lines] == [("warning", "credentials file readable by others")]
    assert "sk-secret-value" not in repr(log.lines)


async def test_env_store_reads_the_running_configuration_through_a_getter() -> None:
    configs = [Config(providers={"up": ProviderConfig(type="openai", api_key="sk-1")})]
    store = EnvStore(lambda: configs[-1])
    assert await store.get_provider_keys("up") == ["sk-1"]
    configs.append(Config(providers={"up": ProviderConfig(type="openai", api_key="sk-2")}))
    assert await store.get_provider_keys("up") == ["sk-2"]
