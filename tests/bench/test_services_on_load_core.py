"""bench/run.py ``services_on_load_core``: the local Redis and PostgreSQL are kept off the gateway's core for
a run (in production they run elsewhere) and put back where they were afterwards."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from run import SERVICE_PROCESSES, services_on_load_core  # noqa: E402


def _service_pids() -> dict[int, str]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if comm in SERVICE_PROCESSES:
                found[int(entry)] = comm
    return found


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable cores")
def test_the_services_go_to_the_load_core_and_come_back() -> None:
    pids = _service_pids()
    if not pids:
        pytest.skip("neither redis-server nor postgres runs on this machine: nothing to move")
    pid = next(iter(pids))
    before = os.sched_getaffinity(pid)
    load = max(os.sched_getaffinity(0))
    try:
        os.sched_setaffinity(pid, before)  # a process this user may not move is left alone, and said so
    except PermissionError:
        with services_on_load_core(load) as moved:
            assert any(name.startswith(f"{pids[pid]} {pid} (not moved") for name in moved)
        return
    with services_on_load_core(load) as moved:
        assert f"{pids[pid]} {pid}" in moved
        assert os.sched_getaffinity(pid) == {load}
    assert os.sched_getaffinity(pid) == before
