"""``core.ids``: pooled random ids, as ``os.urandom(12).hex()`` gives them, never repeated across a fork."""

from __future__ import annotations

import os

from gomodel_proxy.core import ids


def test_ids_are_24_hex_chars_and_distinct_across_refills() -> None:
    drawn = [ids.random_id() for _ in range(3 * 512 + 7)]
    assert all(len(i) == 24 and int(i, 16) >= 0 and i == i.lower() for i in drawn)
    assert len(set(drawn)) == len(drawn)


def test_a_forked_child_does_not_hand_out_its_parent_s_pooled_ids() -> None:
    ids.random_id()  # the pool holds ids now
    pooled = set(ids._pool)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id is drawn afresh
        try:
            os.write(write, ids.random_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == 24 and child not in pooled
