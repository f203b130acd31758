"""The SQLite response store: put/get/delete/history, persistence across instances, work off the loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from gomodel_proxy.storage.responses import SQLiteResponseStore, StoredResponse


async def test_put_get_history_delete_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "responses.sqlite3"
    store = SQLiteResponseStore(path)
    assert not path.exists()  # opened on first use only
    items = [{"type": "message", "role": "user", "content": "Hi"},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]}]
    response = {"id": "resp_1", "object": "response", "output": items[1:], "status": "completed"}
    await store.put(StoredResponse(id="resp_1", provider="mock", model="mock-chat", response=response, items=items))
    await store.put(StoredResponse(id="resp_native", provider="openai", model="gpt-4o"))
    got = await store.get("resp_1")
    assert got is not None and not got.native
    assert (got.provider, got.model, got.response) == ("mock", "mock-chat", response)
    assert await store.history("resp_1") == items
    native = await store.get("resp_native")
    assert native is not None and native.native and native.provider == "openai"
    assert await store.history("resp_native") is None
    assert await store.get("resp_unknown") is None and await store.history("resp_unknown") is None
    await store.close()

    again = SQLiteResponseStore(path)  # a restarted gateway (or another worker) sees the same responses
    assert (await again.get("resp_1")) is not None
    assert await again.delete("resp_1") is True
    assert await again.delete("resp_1") is False
    assert await again.get("resp_1") is None and await again.history("resp_1") is None
    # Replacing a record keeps one row with the new content.
    await again.put(StoredResponse(id="resp_native", provider="xai"))
    record = await again.get("resp_native")
    assert record is not None and record.provider == "xai"
    await again.close()


async def test_database_work_runs_off_the_event_loop(tmp_path: Path) -> None:
    store = SQLiteResponseStore(tmp_path / "r.sqlite3")
    threads: set[int] = set()
    original = store._query

    def spy(sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        threads.add(threading.get_ident())
        return original(sql, params)

    store._query = spy  # type: ignore[method-assign]
    await asyncio.gather(*(store.put(StoredResponse(id=f"r{i}", provider="p")) for i in range(20)))
    found = await asyncio.gather(*(store.get(f"r{i}") for i in range(20)))
    assert all(r is not None and r.id == f"r{i}" for i, r in enumerate(found))
    assert threads and threading.get_ident() not in threads
    await store.close()
