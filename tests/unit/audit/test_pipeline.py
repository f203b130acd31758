"""The audit pipeline: entries queued without waiting, written in batches, spilled to files when the sink
is slow or down and replayed when it is back, drained at close; a full queue counts and logs its drops."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from gomodel_proxy.audit.file_sink import FileSink
from gomodel_proxy.audit.pipeline import AuditLogger, NoopAuditLogger
from gomodel_proxy.audit.trail import AuditTrail, NoopAuditTrail
from gomodel_proxy.core.types import CallRecord


class Logger:
    def __init__(self) -> None:
        self.errors: list[tuple[str, dict[str, Any]]] = []
        self.infos: list[tuple[str, dict[str, Any]]] = []

    def error(self, msg: str, **kw: Any) -> None:
        self.errors.append((msg, kw))

    def warning(self, msg: str, **kw: Any) -> None:
        self.errors.append((msg, kw))

    def info(self, msg: str, **kw: Any) -> None:
        self.infos.append((msg, kw))

    def exception(self, msg: str, **kw: Any) -> None:
        self.errors.append((msg, kw))


class MemorySink:
    """Keeps what it is given; ``fail`` makes writes raise, ``stall`` makes them wait until released."""

    name = "memory"

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.batches: list[int] = []
        self.fail = False
        self.fail_start = False
        self.stall: asyncio.Event | None = None
        self.started = self.closed = 0

    async def start(self) -> None:
        if self.fail_start:
            raise ConnectionRefusedError("sink down")
        self.started += 1

    async def write(self, entries: Sequence[dict[str, Any]]) -> None:
        if self.stall is not None:
            await self.stall.wait()
        if self.fail:
            raise ConnectionRefusedError("sink down")
        self.batches.append(len(entries))
        self.entries.extend(entries)

    async def close(self) -> None:
        self.closed += 1


def step(i: int) -> dict[str, Any]:
    return {"request_id": f"req-{i}", "step": "guardrail", "guardrail": "pii", "action": "redact"}


def make(sink: MemorySink, tmp_path: Path, **kw: Any) -> AuditLogger:
    kw.setdefault("flush_interval_s", 0.01)
    kw.setdefault("retry_s", 0.02)
    kw.setdefault("max_retry_s", 0.05)
    return AuditLogger(sink, spill_dir=tmp_path / "spill", logger=Logger(), **kw)


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def ids(sink: MemorySink) -> list[str]:
    return [e["request_id"] for e in sink.entries]


async def test_noop_keeps_nothing_and_is_a_trail() -> None:
    noop: AuditTrail = NoopAuditTrail()
    assert isinstance(noop, NoopAuditLogger)
    await noop.start()
    noop.log_middleware_step(step(1))
    logger = NoopAuditLogger()
    logger.log_request(CallRecord("r", "chat"))
    logger.log_response({"x": 1})
    await noop.close()


async def test_entries_are_written_in_batches_then_drained_at_close(tmp_path: Path) -> None:
    sink = MemorySink()
    audit = make(sink, tmp_path, batch_size=100)
    for i in range(250):  # queued before the writer starts
        audit.log_middleware_step(step(i))
    await audit.start()
    await until(lambda: len(sink.entries) == 250)
    assert sink.batches == [100, 100, 50]
    audit.log_response({"request_id": "resp", "status": 200})
    call = CallRecord("call-1", "chat", model_requested="m", status=200)
    call.finished = call.started + 0.5
    audit.log_request(call)
    await audit.close()
    assert ids(sink)[:250] == [f"req-{i}" for i in range(250)]
    kinds = {e["request_id"]: e["kind"] for e in sink.entries}
    assert kinds["req-0"] == "step" and kinds["resp"] == "response" and kinds["call-1"] == "request"
    assert (audit.written, audit.spilled, audit.dropped) == (252, 0, 0) and sink.closed == 1
    assert audit.logger.infos == []  # nothing to say: everything reached the sink
    audit.log_middleware_step(step(999))  # after close: counted, not kept
    assert audit.dropped == 1
    await audit.close()  # twice: harmless
    assert sink.closed == 1


async def test_close_without_start_writes_what_was_queued(tmp_path: Path) -> None:
    sink = MemorySink()
    audit = make(sink, tmp_path)
    for i in range(3):
        audit.log_middleware_step(step(i))
    await audit.close()
    assert ids(sink) == ["req-0", "req-1", "req-2"]


async def test_a_full_queue_drops_counts_and_logs_at_most_once_a_second(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    sink = MemorySink()
    audit = make(sink, tmp_path, queue_size=5)
    for i in range(5):
        audit.log_middleware_step(step(i))
    for i in range(5, 9):  # returns at once: no await, no block
        audit.log_middleware_step(step(i))
    assert audit.dropped == 4 and audit.queued == 5
    errors = audit.logger.errors
    assert [(m, kw["dropped"]) for m, kw in errors] == [("audit queue full; entries dropped", 1)]
    clock[0] += 0.5
    audit.log_middleware_step(step(9))
    assert len(errors) == 1
    clock[0] += 0.6
    audit.log_middleware_step(step(10))
    assert errors[-1][1]["dropped"] == 6
    await audit.close()
    assert ids(sink) == [f"req-{i}" for i in range(5)] and audit.stats()["dropped"] == 6


async def test_a_sink_that_is_down_spills_and_everything_is_replayed_when_it_is_back(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.fail = True
    audit = make(sink, tmp_path, batch_size=10)
    await audit.start()
    for i in range(35):
        audit.log_middleware_step(step(i))
        if i % 7 == 0:
            await asyncio.sleep(0.01)
    await until(lambda: audit.spilled == 35)
    stuck = make(MemorySink(), tmp_path / "other")
    stuck.spilled = 3
    await stuck.close()
    assert stuck.logger.errors[-1][0] == "audit closed with entries not in the sink"
    assert sink.entries == [] and not audit.healthy
    assert any("entries spill" in m for m, _ in audit.logger.errors)
    assert list((tmp_path / "spill").glob("audit-spill-memory-*"))
    sink.fail = False
    await until(lambda: audit.healthy and audit.replayed == 35)
    audit.log_middleware_step(step(35))
    await audit.close()
    assert sorted(ids(sink)) == sorted(f"req-{i}" for i in range(36))  # each once
    assert not list((tmp_path / "spill").iterdir())


async def test_a_sink_that_cannot_start_spills_until_it_can(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.fail_start = True
    audit = make(sink, tmp_path)
    await audit.start()
    assert not audit.healthy
    for i in range(5):
        audit.log_middleware_step(step(i))
    await until(lambda: audit.spilled == 5)
    sink.fail_start = False
    await until(lambda: audit.replayed == 5)
    await audit.close()
    assert sorted(ids(sink)) == [f"req-{i}" for i in range(5)] and sink.started == 1


async def test_a_stalled_sink_times_out_spills_and_nothing_waits_for_it(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.stall = asyncio.Event()
    audit = make(sink, tmp_path, batch_size=5, timeout_s=0.05)
    await audit.start()
    started = time.monotonic()
    for i in range(20):
        audit.log_middleware_step(step(i))  # never waits
    assert time.monotonic() - started < 0.5
    await until(lambda: audit.spilled == 20)
    assert sink.entries == []
    sink.stall.set()
    sink.stall = None
    await until(lambda: audit.replayed == 20)
    await audit.close()
    assert sorted(ids(sink)) == sorted(f"req-{i}" for i in range(20))


async def test_a_busy_writer_with_a_filling_queue_spills_rather_than_wait(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.stall = asyncio.Event()
    audit = make(sink, tmp_path, batch_size=10, queue_size=40, timeout_s=10)
    await audit.start()
    for i in range(10):
        audit.log_middleware_step(step(i))
    await until(lambda: audit._writing is not None)  # the first batch is with the (stalled) sink
    for i in range(10, 40):
        audit.log_middleware_step(step(i))
    await until(lambda: audit.spilled >= 10)  # the queue reached half: batches spill
    sink.stall.set()
    await audit.close()
    await AuditLogger(sink, spill_dir=tmp_path / "spill", logger=Logger()).close()
    assert audit.dropped == 0
    assert audit.written + audit.spilled == 40


async def test_spill_files_left_behind_are_replayed_at_start(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    dead = 2**22 + 12345  # above pid_max's default: no such process
    lines = b"".join(orjson.dumps({"id": f"x{i}", "kind": "step", "ts": 1.0 + i, "request_id": f"old-{i}"}) + b"\n"
                     for i in range(3))
    (spill / f"audit-spill-memory-{dead}-100-1.jsonl").write_bytes(lines + b'{"cut by a cra')
    (spill / f"audit-spill-memory-{os.getpid()}-50-1.jsonl.claimed-{dead}").write_bytes(
        orjson.dumps({"id": "y", "kind": "step", "ts": 0.5, "request_id": "claimed"}) + b"\n")
    # Another live process's file (pid 1 always exists): not ours to replay.
    (spill / "audit-spill-memory-1-10-1.jsonl").write_bytes(lines)
    (spill / "audit-spill-other-1-10-1.jsonl").write_bytes(lines)  # another sink's
    sink = MemorySink()
    audit = make(sink, tmp_path)
    await audit.start()
    await until(lambda: audit.replayed == 4)
    await audit.close()
    assert ids(sink) == ["claimed", "old-0", "old-1", "old-2"]  # oldest file first
    assert sorted(p.name for p in spill.iterdir()) == ["audit-spill-memory-1-10-1.jsonl",
                                                        "audit-spill-other-1-10-1.jsonl"]


async def test_a_replay_that_fails_midway_keeps_the_rest(tmp_path: Path) -> None:
    sink = MemorySink()
    audit = make(sink, tmp_path, batch_size=2)
    spill = tmp_path / "spill"
    spill.mkdir()
    path = spill / f"audit-spill-memory-{os.getpid()}-1-1.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"id": str(i), "kind": "step", "ts": i, "request_id": f"s{i}"}) + b"\n"
                              for i in range(5)))
    calls = [0]
    write = sink.write

    async def flaky(entries: Sequence[dict[str, Any]]) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise OSError("blip")
        await write(entries)

    sink.write = flaky  # type: ignore[method-assign]
    await audit._start_sink()
    assert await audit._replay_file(path) is False
    assert [e["request_id"] for e in orjson.loads(b"[" + b",".join(path.read_bytes().splitlines()) + b"]")] == [
        "s2", "s3", "s4"]
    assert await audit._replay_file(path) is True
    assert ids(sink) == ["s0", "s1", "s2", "s3", "s4"] and not path.exists()
    await audit.close()


async def test_an_unwritable_spill_dir_counts_drops(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.fail = True
    (tmp_path / "spill").write_text("a file where the directory should be")
    audit = AuditLogger(sink, spill_dir=tmp_path / "spill" / "x", logger=Logger(), flush_interval_s=0.01)
    with pytest.raises(OSError):
        await audit.start()
    audit.spill_dir = tmp_path / "spill"
    await audit._spill([{"id": "1", "ts": 1.0}])
    assert audit.dropped == 1
    assert audit.logger.errors[-1][0].startswith("audit spill file cannot be written")


async def test_behind_means_another_full_batch_waits_and_the_file_sink_is_told(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "audit.jsonl")
    logger = AuditLogger(sink, spill_dir=tmp_path / "spill", logger=Logger(), batch_size=4)
    assert sink.hurry == logger.behind  # the sink's serialization stops slicing when the pipeline is behind
    for i in range(3):
        logger.log_middleware_step(step(i))
    assert not logger.behind()
    logger.log_middleware_step(step(3))
    assert logger.behind()


async def test_a_backlog_is_caught_up_in_whole_batches_without_drops(tmp_path: Path) -> None:
    sink = MemorySink()
    logger = make(sink, tmp_path, batch_size=64, queue_size=10_000)
    for i in range(64 * 20):
        logger.log_middleware_step(step(i))
    await logger.start()
    await until(lambda: len(sink.entries) == 64 * 20)
    await logger.close()
    assert logger.dropped == 0 and logger.spilled == 0
    assert ids(sink) == [f"req-{i}" for i in range(64 * 20)]


async def test_an_entry_that_cannot_be_built_is_the_only_one_lost(tmp_path: Path) -> None:
    sink = MemorySink()
    logger = make(sink, tmp_path, batch_size=500)
    for i in range(70):
        logger.log_middleware_step(step(i))
    logger.log_request(object())  # type: ignore[arg-type]  # not a call record: its entries cannot be built
    logger.log_middleware_step(step(70))
    await logger.start()
    await until(lambda: len(sink.entries) == 71)
    await logger.close()
    assert logger.dropped == 1
    assert ids(sink) == [f"req-{i}" for i in range(71)]
    assert any(msg == "audit entry cannot be built" for msg, _ in logger.logger.errors)
