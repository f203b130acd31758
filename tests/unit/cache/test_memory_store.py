"""The in-memory store: LRU eviction by bytes, expiry on read, counters, and the snapshot round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gomodel_proxy.cache.memory_store import ENTRY_OVERHEAD, CachedAnswer, MemoryStore, entry_size


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def answer(
    body: bytes = b"{}", *, stored_at: float = 1000.0, ttl_s: float = 60.0, stream: bool = False
) -> CachedAnswer:
    return CachedAnswer(
        status=200, content_type="application/json", body=body, stored_at=stored_at, ttl_s=ttl_s, stream=stream
    )


def size(key: str, body: bytes) -> int:
    return len(key) + len(body) + ENTRY_OVERHEAD


def test_put_get_and_size_accounting() -> None:
    store = MemoryStore(10_000, clock=Clock())
    stored = answer(b"hello")
    store.put("k1", stored)
    assert store.get("k1") is stored
    assert store.entries == 1
    assert store.bytes_used == size("k1", b"hello") == entry_size("k1", stored)


def test_replacing_a_key_recounts_its_bytes() -> None:
    store = MemoryStore(10_000, clock=Clock())
    store.put("k", answer(b"a" * 100))
    store.put("k", answer(b"b" * 10))
    assert store.entries == 1
    assert store.bytes_used == size("k", b"b" * 10)
    assert store.get("k") == answer(b"b" * 10)


def test_least_recently_used_is_evicted_first() -> None:
    body = b"x" * 100
    store = MemoryStore(3 * size("k1", body), clock=Clock())
    for k in ("k1", "k2", "k3"):
        store.put(k, answer(body))
    assert store.get("k1") is not None  # k2 is now the least recently used
    store.put("k4", answer(body))
    assert store.get("k2") is None
    assert all(store.get(k) is not None for k in ("k1", "k3", "k4"))
    assert store.evictions == 1
    assert store.bytes_used <= store.max_bytes


def test_a_large_entry_evicts_as_many_as_needed() -> None:
    small = b"s" * 10
    store = MemoryStore(4 * size("k1", small) + 50, clock=Clock())
    for k in ("k1", "k2", "k3", "k4"):
        store.put(k, answer(small))
    store.put("big", answer(b"B" * (3 * size("k1", small) - ENTRY_OVERHEAD)))
    assert store.evictions == 3
    assert store.get("k4") is not None
    assert store.get("big") is not None
    assert store.bytes_used <= store.max_bytes


def test_oversize_entry_is_refused_and_evicts_nothing() -> None:
    store = MemoryStore(1000, clock=Clock())
    store.put("small", answer(b"a"))
    store.put("huge", answer(b"x" * 1000))
    assert store.get("huge") is None
    assert store.get("small") is not None
    assert store.evictions == 0


def test_zero_max_bytes_stores_nothing_and_negative_is_rejected() -> None:
    store = MemoryStore(0)
    store.put("k", answer())
    assert store.entries == 0
    with pytest.raises(ValueError, match="negative"):
        MemoryStore(-1)


def test_expired_entries_are_dropped_on_read() -> None:
    clock = Clock(1000.0)
    store = MemoryStore(10_000, clock=clock)
    store.put("k", answer(stored_at=1000.0, ttl_s=30.0))
    clock.now = 1029.9
    assert store.get("k") is not None
    clock.now = 1030.0
    assert store.get("k") is None
    assert store.entries == 0
    assert store.bytes_used == 0


def test_already_expired_answer_is_not_stored() -> None:
    store = MemoryStore(10_000, clock=Clock(2000.0))
    store.put("k", answer(stored_at=1000.0, ttl_s=30.0))
    assert store.entries == 0


def test_delete() -> None:
    store = MemoryStore(10_000, clock=Clock())
    store.put("k", answer())
    store.delete("k")
    store.delete("absent")
    assert store.get("k") is None
    assert store.bytes_used == 0


def test_hit_and_miss_counters() -> None:
    clock = Clock()
    store = MemoryStore(10_000, clock=clock)
    store.put("k", answer(ttl_s=10.0))
    store.get("k")
    store.get("k")
    store.get("absent")
    clock.now += 10.0
    store.get("k")  # expired: a miss
    assert (store.hits, store.misses) == (2, 2)


def test_save_load_round_trip_keeps_entries_order_and_ages(tmp_path: Path) -> None:
    clock = Clock(1000.0)
    store = MemoryStore(10_000, clock=clock)
    store.put("a", answer(b"\x00\xffbinary", stored_at=990.0, ttl_s=60.0, stream=True))
    store.put("b", answer(b"plain", stored_at=1000.0, ttl_s=math.inf))
    store.put("c", answer(b"c"))
    store.get("a")  # LRU order now b, c, a
    path = tmp_path / "sub" / "cache.json"
    store.save(path, wall=lambda: 5000.0)

    new_clock = Clock(7.0)  # a fresh monotonic clock after a restart
    loaded = MemoryStore.load(path, 3 * size("a", b"\x00\xffbinary"), new_clock, wall=lambda: 5005.0)
    assert loaded.entries == 3
    a = loaded.get("b") and loaded.get("c") and loaded.get("a")
    assert a is not None
    assert a.body == b"\x00\xffbinary"
    assert a.stream is True
    assert a.stored_at == pytest.approx(7.0 - 10.0 - 5.0)  # 10 s old at save, 5 s offline
    b = loaded.get("b")
    assert b is not None and b.ttl_s == math.inf
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left behind


def test_load_keeps_the_most_recent_when_smaller(tmp_path: Path) -> None:
    store = MemoryStore(10_000, clock=Clock())
    for k in ("k1", "k2", "k3"):
        store.put(k, answer(b"x" * 100))
    store.save(tmp_path / "c.json")
    loaded = MemoryStore.load(tmp_path / "c.json", 2 * size("k1", b"x" * 100), Clock())
    assert loaded.get("k1") is None
    assert loaded.get("k3") is not None


def test_expired_entries_are_skipped_on_save_and_load(tmp_path: Path) -> None:
    clock = Clock(1000.0)
    store = MemoryStore(10_000, clock=clock)
    store.put("short", answer(ttl_s=5.0))
    store.put("long", answer(ttl_s=100.0))
    store.put("gone", answer(ttl_s=1.0))
    clock.now = 1002.0
    store.save(tmp_path / "c.json", wall=lambda: 0.0)
    assert b"gone" not in (tmp_path / "c.json").read_bytes()
    loaded = MemoryStore.load(tmp_path / "c.json", 10_000, Clock(50.0), wall=lambda: 10.0)
    assert loaded.get("short") is None  # expired while the gateway was down
    assert loaded.get("long") is not None


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        b'{"version": 99, "saved_at": 0, "entries": []}',
        b'{"version": 1, "saved_at": 0}',
        b'{"version": 1, "saved_at": 0, "entries": [{"key": "k"}]}',
        b'{"version": 1, "saved_at": 0, "entries": [{"key": "k", "status": 200, "content_type": "a",'
        b' "body": "!!notbase64", "age": 0, "ttl_s": 9, "stream": false}]}',
        b'{"version": 1, "saved_at": 0, "entries": [{"key": 1, "status": 200, "content_type": "a",'
        b' "body": "", "age": 0, "ttl_s": 9, "stream": false}]}',
    ],
)
def test_corrupt_snapshot_gives_an_empty_store(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(content)
    loaded = MemoryStore.load(path, 10_000, Clock())
    assert loaded.entries == 0
    loaded.put("k", answer())
    assert loaded.get("k") is not None


def test_missing_snapshot_gives_an_empty_store(tmp_path: Path) -> None:
    assert MemoryStore.load(tmp_path / "absent.json", 10_000, Clock()).entries == 0


def test_valid_snapshot_loads(tmp_path: Path) -> None:
    """The corrupt cases above differ from this one in a single part, so each tests what it claims."""
    path = tmp_path / "c.json"
    path.write_bytes(
        b'{"version": 1, "saved_at": 0, "entries": [{"key": "k", "status": 200, "content_type": "a",'
        b' "body": "", "age": 0, "ttl_s": 9, "stream": false}]}'
    )
    assert MemoryStore.load(path, 10_000, Clock(), wall=lambda: 0.0).entries == 1
