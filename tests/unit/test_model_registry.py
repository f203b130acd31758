"""ModelRegistry with in-memory providers: resolution, failures, and the disk cache."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gomodel_proxy.core.errors import ModelNotFoundError
from gomodel_proxy.core.interfaces import Provider
from gomodel_proxy.core.types import ModelInfo
from gomodel_proxy.observability.metrics import Metrics
from gomodel_proxy.routing.model_registry import ModelRegistry


class FakeProvider:
    """A provider whose model list is given, or whose listing fails or never answers."""

    def __init__(self, name: str, models: list[str] | None = None, *, fail: Exception | None = None,
                 hang: bool = False) -> None:
        self.name = name
        self.kind = "fake"
        self.injects_stream_usage = False
        self.native_apis = frozenset({"openai.chat"})
        self.models = models or []
        self.fail = fail
        self.hang = hang
        self.calls = 0

    async def list_models(self) -> list[ModelInfo]:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise self.fail
        return [ModelInfo(id=m, provider=self.name, owned_by=f"{self.name}-org", created=1700000000 + i)
                for i, m in enumerate(self.models)]

    async def chat_completions(self, body: dict[str, Any], *, stream: bool) -> Any:
        raise NotImplementedError

    async def embeddings(self, body: dict[str, Any]) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class FakeLogger:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.records.append(("warning", event, kw))

    def info(self, event: str, **kw: Any) -> None:
        self.records.append(("info", event, kw))


def make(providers: list[FakeProvider], cache_file: Path | None = None, *, timeout: float = 1.0,
         metrics: Metrics | None = None) -> tuple[ModelRegistry, FakeLogger, Metrics]:
    logger = FakeLogger()
    metrics = metrics or Metrics()
    mapping: dict[str, Provider] = {p.name: p for p in providers}
    registry = ModelRegistry(mapping, cache_file=cache_file, refresh_s=3600, fetch_timeout_s=timeout,
                             metrics=metrics, logger=logger)
    return registry, logger, metrics


def metric(metrics: Metrics, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def test_fake_provider_satisfies_the_protocol() -> None:
    assert isinstance(FakeProvider("x"), Provider)


# -- resolution -------------------------------------------------------------------------------------------


async def test_resolve_bare_qualified_and_unknown() -> None:
    openai = FakeProvider("openai", ["gpt-4o-mini", "shared"])
    groq = FakeProvider("groq", ["llama-3.3-70b", "shared", "openai/gpt-oss-120b"])
    registry, _, metrics = make([openai, groq])
    await registry.refresh()
    assert registry.status == {"openai": "ok", "groq": "ok"}
    assert registry.resolve("gpt-4o-mini") == (openai, "gpt-4o-mini")
    assert registry.resolve("llama-3.3-70b") == (groq, "llama-3.3-70b")
    assert registry.resolve("shared") == (openai, "shared")  # first provider in configuration order wins
    assert registry.resolve("groq/shared") == (groq, "shared")
    assert registry.resolve("groq/not-listed") == (groq, "not-listed")  # the provider decides
    assert registry.resolve("openai/gpt-oss-120b") == (openai, "gpt-oss-120b")  # a provider prefix comes first
    with pytest.raises(ModelNotFoundError) as info:
        registry.resolve("claude-3")
    err = info.value
    assert (err.status, err.code, err.param) == (404, "model_not_found", "model")
    assert "'claude-3'" in err.message and "GET /v1/models" in err.message
    assert metric(metrics, "gomodel_provider_models", provider="groq") == 3.0


async def test_a_listed_id_with_a_slash_resolves_when_no_provider_has_that_prefix() -> None:
    groq = FakeProvider("groq", ["openai/gpt-oss-120b"])
    registry, _, _ = make([groq])
    await registry.refresh()
    assert registry.resolve("openai/gpt-oss-120b") == (groq, "openai/gpt-oss-120b")
    with pytest.raises(ModelNotFoundError):
        registry.resolve("mistral/large")


@pytest.mark.parametrize("model", ["", "/", "groq/", "/gpt"])
async def test_malformed_ids_are_not_found(model: str) -> None:
    registry, _, _ = make([FakeProvider("groq", ["gpt"])])
    await registry.refresh()
    with pytest.raises(ModelNotFoundError):
        registry.resolve(model)


async def test_second_provider_takes_over_a_name_when_the_first_drops_it() -> None:
    first = FakeProvider("a", ["m"])
    second = FakeProvider("b", ["m"])
    registry, _, _ = make([first, second])
    await registry.refresh()
    assert registry.resolve("m")[0] is first
    first.models = []
    await registry.refresh()
    assert registry.resolve("m")[0] is second


async def test_models_and_find() -> None:
    registry, _, _ = make([FakeProvider("openai", ["gpt", "both"]), FakeProvider("groq", ["llama", "both"])])
    await registry.refresh()
    assert [m.qualified_id for m in registry.models()] == ["openai/gpt", "openai/both", "groq/llama", "groq/both"]
    assert registry.find("groq/both") == ModelInfo("both", "groq", "groq-org", 1700000001)
    assert registry.find("both") == ModelInfo("both", "openai", "openai-org", 1700000001)
    assert registry.find("llama") == ModelInfo("llama", "groq", "groq-org", 1700000000)
    assert registry.find("groq/gpt") is None
    assert registry.find("nope") is None
    assert registry.find("nobody/gpt") is None


# -- failures ---------------------------------------------------------------------------------------------


async def test_a_failing_list_marks_the_provider_failed_and_is_counted() -> None:
    good = FakeProvider("good", ["m1"])
    bad = FakeProvider("bad", fail=RuntimeError("HTTP 401 from upstream"))
    registry, logger, metrics = make([good, bad])
    assert registry.status == {"good": "pending", "bad": "pending"}
    await registry.refresh()
    assert registry.status == {"good": "ok", "bad": "failed"}
    assert metric(metrics, "gomodel_model_list_failures_total", provider="bad") == 1.0
    assert metric(metrics, "gomodel_model_list_failures_total", provider="good") is None
    assert metric(metrics, "gomodel_provider_models", provider="bad") == 0.0
    (level, event, fields), = logger.records
    assert (level, event) == ("warning", "model list unavailable")
    assert fields["provider"] == "bad"
    assert fields["error"] == "HTTP 401 from upstream"
    assert "only 'provider/model'" in fields["using"]
    assert registry.resolve("bad/anything") == (bad, "anything")  # still reachable by qualified id
    await registry.refresh()
    assert metric(metrics, "gomodel_model_list_failures_total", provider="bad") == 2.0


async def test_a_list_that_does_not_answer_in_time_is_a_failure() -> None:
    slow = FakeProvider("slow", hang=True)
    registry, logger, metrics = make([slow], timeout=0.01)
    await registry.refresh()
    assert registry.status["slow"] == "failed"
    assert logger.records[0][2]["error"] == "TimeoutError"
    assert metric(metrics, "gomodel_model_list_failures_total", provider="slow") == 1.0


async def test_a_failure_after_a_good_list_keeps_the_list_as_cached() -> None:
    flaky = FakeProvider("flaky", ["m"])
    registry, logger, _ = make([flaky])
    await registry.refresh()
    flaky.fail = ConnectionError()
    await registry.refresh()
    assert registry.status["flaky"] == "cached"
    assert registry.resolve("m") == (flaky, "m")
    assert logger.records[-1][2]["error"] == "ConnectionError"
    assert logger.records[-1][2]["using"] == "the list cached on disk"


async def test_cancellation_is_not_swallowed() -> None:
    registry, _, metrics = make([FakeProvider("slow", hang=True)], timeout=10)
    task = asyncio.create_task(registry.refresh())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert registry.status["slow"] == "pending"
    assert metric(metrics, "gomodel_model_list_failures_total", provider="slow") is None


# -- disk cache -------------------------------------------------------------------------------------------


async def test_cache_is_written_and_a_new_registry_resolves_from_it_with_no_fetch(tmp_path: Path) -> None:
    cache = tmp_path / "nested" / "models.json"
    registry, _, _ = make([FakeProvider("openai", ["gpt"]), FakeProvider("groq", ["llama"])], cache)
    await registry.refresh()
    assert orjson.loads(cache.read_bytes()) == {"providers": {
        "openai": [{"id": "gpt", "owned_by": "openai-org", "created": 1700000000}],
        "groq": [{"id": "llama", "owned_by": "groq-org", "created": 1700000000}],
    }}
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".models-")]  # no temporary left

    openai = FakeProvider("openai", hang=True)
    groq = FakeProvider("groq", fail=RuntimeError("down"))
    restarted, _, metrics = make([openai, groq], cache)
    await restarted.start()
    try:
        # Before any fetch has run: resolved from disk alone.
        assert (openai.calls, groq.calls) == (0, 0)
        assert restarted.resolve("gpt") == (openai, "gpt")
        assert restarted.resolve("llama") == (groq, "llama")
        assert restarted.find("groq/llama") == ModelInfo("llama", "groq", "groq-org", 1700000000)
        assert metric(metrics, "gomodel_provider_models", provider="openai") == 1.0
        assert not restarted.ready.is_set()
        await asyncio.sleep(0.05)
        assert groq.calls == 1
        assert restarted.status["groq"] == "cached"
    finally:
        await restarted.stop()
    assert restarted.resolve("llama") == (groq, "llama")


async def test_cache_entries_of_providers_no_longer_configured_are_ignored(tmp_path: Path) -> None:
    cache = tmp_path / "models.json"
    cache.write_bytes(orjson.dumps({"providers": {"gone": [{"id": "old"}], "kept": [{"id": "m"}]}}))
    kept = FakeProvider("kept", fail=RuntimeError("x"))
    registry, _, _ = make([kept], cache)
    await registry.start()
    await registry.stop()
    assert registry.resolve("m") == (kept, "m")
    assert registry.find("kept/m") == ModelInfo("m", "kept", "", 0)
    with pytest.raises(ModelNotFoundError):
        registry.resolve("old")


@pytest.mark.parametrize(
    "content",
    [
        b"not json at all",
        b"[1, 2, 3]",
        b'{"providers": {"p": [{"no_id": 1}]}}',
        b'{"providers": {"p": [{"id": "m", "created": "yesterday"}]}}',
        b'{"providers": {"p": 5}}',
        b'{"providers": ["p"]}',
        b"\xff\xfe",
    ],
)
async def test_an_unreadable_cache_file_is_ignored(tmp_path: Path, content: bytes) -> None:
    cache = tmp_path / "models.json"
    cache.write_bytes(content)
    provider = FakeProvider("p", hang=True)
    registry, logger, _ = make([provider], cache)
    await registry.start()
    try:
        with pytest.raises(ModelNotFoundError):
            registry.resolve("m")
        assert registry.models() == []
        level, event, fields = logger.records[0]
        assert (level, event, fields["path"]) == ("warning", "model cache unreadable; ignoring it", str(cache))
    finally:
        await registry.stop()


async def test_a_partly_good_cache_is_dropped_whole(tmp_path: Path) -> None:
    cache = tmp_path / "models.json"
    cache.write_bytes(b'{"providers": {"a": [{"id": "fine"}], "b": [{"oops": 1}]}}')
    registry, logger, _ = make([FakeProvider("a", hang=True), FakeProvider("b", hang=True)], cache)
    await registry.start()
    await registry.stop()
    assert registry.models() == []
    assert logger.records[0][1] == "model cache unreadable; ignoring it"


async def test_no_cache_file_and_no_cache_path(tmp_path: Path) -> None:
    registry, logger, _ = make([FakeProvider("p", ["m"])], tmp_path / "absent.json")
    await registry.start()
    await asyncio.wait_for(registry.ready.wait(), 1)
    await registry.stop()
    assert logger.records == []
    assert (tmp_path / "absent.json").is_file()
    uncached, _, _ = make([FakeProvider("p", ["m"])], None)
    await uncached.refresh()
    assert uncached.resolve("m")[1] == "m"


async def test_a_cache_that_cannot_be_written_is_logged_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a directory")
    registry, logger, _ = make([FakeProvider("p", ["m"])], blocker / "models.json")
    await registry.refresh()
    assert registry.resolve("m")[1] == "m"
    level, event, fields = logger.records[0]
    assert (level, event, fields["path"]) == ("warning", "model cache not written", str(blocker / "models.json"))


# -- lifecycle --------------------------------------------------------------------------------------------


async def test_ready_after_the_first_round_and_stop_is_idempotent() -> None:
    provider = FakeProvider("p", ["m"])
    registry, _, _ = make([provider])
    await registry.start()
    await asyncio.wait_for(registry.ready.wait(), 1)
    assert registry.status == {"p": "ok"}
    assert provider.calls == 1
    await registry.stop()
    await registry.stop()


async def test_ready_at_once_without_providers() -> None:
    registry, _, _ = make([])
    await registry.start()
    assert registry.ready.is_set()
    await registry.stop()
    assert registry.models() == []
