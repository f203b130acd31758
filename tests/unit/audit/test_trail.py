"""The audit trail: entries queued without blocking, written as JSON lines in batches by a background task,
drained at close; a full queue or an unwritable file counts drops and logs, never raises."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from gomodel_proxy.audit.trail import AuditTrail, FileAuditTrail, NoopAuditTrail


class Logger:
    """Collects ``error`` calls."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, dict[str, Any]]] = []

    def error(self, msg: str, **kw: Any) -> None:
        self.errors.append((msg, kw))


def entry(i: int) -> dict[str, Any]:
    return {"request_id": f"req-{i}", "step": "guardrails", "guardrail": "pii-redactor", "decision": "redact",
            "detail": "email=1"}


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_noop_keeps_nothing() -> None:
    noop: AuditTrail = NoopAuditTrail()
    await noop.start()
    noop.log_middleware_step(entry(1))
    await noop.close()


async def test_entries_are_written_as_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "audit.jsonl"
    audit = FileAuditTrail(path, logger=Logger())
    await audit.start()
    assert path.parent.is_dir()
    audit.log_middleware_step(entry(1))
    audit.log_middleware_step({**entry(2), "request_id": "req-ü", "count": 3, "ok": True})
    for _ in range(200):
        if audit.written == 2:
            break
        await asyncio.sleep(0.01)
    assert audit.written == 2  # written by the background task, before close
    await audit.close()
    got = lines(path)
    assert [g["request_id"] for g in got] == ["req-1", "req-ü"]
    assert all(isinstance(g["ts"], float) for g in got)
    assert {k: v for k, v in got[0].items() if k != "ts"} == entry(1)
    assert got[1]["count"] == 3 and got[1]["ok"] is True
    assert (audit.written, audit.dropped) == (2, 0)


async def test_entries_are_appended_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"earlier": 1}\n')
    audit = FileAuditTrail(path, logger=Logger())
    await audit.start()
    audit.log_middleware_step(entry(1))
    await audit.close()
    assert [next(iter(g)) for g in lines(path)] == ["earlier", "ts"]


async def test_many_entries_go_out_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    audit = FileAuditTrail(path, logger=Logger(), batch=100)
    sizes: list[int] = []
    append = audit._append

    def counting(data: bytes) -> None:
        sizes.append(data.count(b"\n"))
        append(data)

    monkeypatch.setattr(audit, "_append", counting)
    for i in range(1050):  # queued before the writer starts
        audit.log_middleware_step(entry(i))
    await audit.start()
    for _ in range(500):
        if audit.written == 1050:
            break
        await asyncio.sleep(0.01)
    await audit.close()
    assert audit.written == 1050 and audit.dropped == 0
    assert sizes == [100] * 10 + [50]
    assert [g["request_id"] for g in lines(path)] == [f"req-{i}" for i in range(1050)]


async def test_close_without_start_writes_what_was_queued(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = FileAuditTrail(path, logger=Logger())
    for i in range(3):
        audit.log_middleware_step(entry(i))
    await audit.close()
    assert [g["request_id"] for g in lines(path)] == ["req-0", "req-1", "req-2"]
    await audit.close()  # twice: nothing left, nothing written
    assert audit.written == 3
    assert len(lines(path)) == 3


async def test_a_full_queue_drops_counts_and_logs_at_most_once_a_second(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    logger = Logger()
    path = tmp_path / "audit.jsonl"
    audit = FileAuditTrail(path, logger=logger, max_queue=5)
    for i in range(5):
        audit.log_middleware_step(entry(i))
    assert audit.dropped == 0
    for i in range(5, 9):  # returns at once: no await, no block
        audit.log_middleware_step(entry(i))
    assert audit.dropped == 4
    assert logger.errors == [("audit queue full; entries dropped", {"dropped": 1})]
    clock[0] += 0.5
    audit.log_middleware_step(entry(9))
    assert len(logger.errors) == 1
    clock[0] += 0.6
    audit.log_middleware_step(entry(10))
    assert logger.errors[-1] == ("audit queue full; entries dropped", {"dropped": 6})
    await audit.start()
    await audit.close()
    assert (audit.written, audit.dropped) == (5, 6)
    assert [g["request_id"] for g in lines(path)] == [f"req-{i}" for i in range(5)]


async def test_an_unwritable_path_counts_drops_and_logs_never_raises(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.mkdir()  # a directory where the file should be: open() fails
    logger = Logger()
    audit = FileAuditTrail(path, logger=logger, batch=10)
    await audit.start()
    for i in range(3):
        audit.log_middleware_step(entry(i))
    for _ in range(200):
        if audit.dropped == 3:
            break
        await asyncio.sleep(0.01)
    assert audit.dropped == 3
    for i in range(2):  # the writer keeps going after a failure
        audit.log_middleware_step(entry(i))
    await audit.close()
    assert (audit.written, audit.dropped) == (0, 5)
    assert logger.errors[0][0] == "audit file cannot be written"
    assert logger.errors[0][1]["path"] == str(path)
    assert sum(kw["dropped"] for _, kw in logger.errors) == 5
    assert all(len(kw["error"]) <= 200 and "request_id" not in kw["error"] for _, kw in logger.errors)


async def test_close_does_not_lose_a_batch_waiting_for_a_worker_thread(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(executor)
    path = tmp_path / "audit.jsonl"
    audit = FileAuditTrail(path, logger=Logger())
    await audit.start()
    gate = threading.Event()
    busy = loop.run_in_executor(None, gate.wait)  # the only worker is busy elsewhere (the gateway's other I/O)
    try:
        for i in range(3):
            audit.log_middleware_step(entry(i))
        for _ in range(5):
            await asyncio.sleep(0)  # the drain task takes the batch and waits for the worker
        closing = asyncio.create_task(audit.close())
        await asyncio.sleep(0.05)
    finally:
        gate.set()
    await closing
    await busy
    assert audit.written + audit.dropped == 3
    assert path.exists() and len(lines(path)) == 3
