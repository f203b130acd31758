"""The measuring side of bench/perf.py: process trees' CPU and memory, wrk runs, and a bare-socket client
that times the first byte of streamed answers.

Why process trees: nginx serves from a worker under its master, and ``--workers`` gateways from children of a
parent; CPU per request and RSS must count all of them, and nothing else.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perf_streams import request_bytes
from perf_systems import Served
from run import (
    LOAD_LUA,
    RawHTTP,
    Setup,
    core_busy_pct,
    core_times,
    cpu_seconds,
    memory_mb,
    percentile,
    run_wrk,
)


# -- processes: trees, CPU, memory -----------------------------------------------------------------
def tree_pids(pid: int) -> list[int]:
    """The process and all its descendants (nginx's worker, ``--workers`` children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def tree_cpu(pid: int) -> float:
    total = 0.0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += cpu_seconds(p)
    return total


def tree_rss(pid: int) -> float:
    total = 0.0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            total += memory_mb(p)
    return total


class Sampler:
    """Highest tree RSS seen per system, sampled from the load loops every ``every_s``."""

    def __init__(self, every_s: float = 0.1) -> None:
        self.pids: dict[str, int] = {}
        self.peak: dict[str, float] = {}
        self.every_s = every_s
        self._last = 0.0

    def tick(self) -> None:
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak.get(name, 0.0), tree_rss(pid))


# -- the load generator -----------------------------------------------------------------------------
class Load:
    """wrk -t1 with bench/load.lua, timed and stopped on time; plus what each side spent meanwhile."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.files: dict[bytes, Path] = {}

    def _file(self, data: bytes) -> Path:
        if data not in self.files:
            path = self.setup.workdir / f"load-{len(self.files)}.txt"
            path.write_bytes(data)
            self.files[data] = path
        return self.files[data]

    def wrk(self, system: Served, path: str, body: bytes, concurrency: int, duration_s: float,
            tick: Callable[[], None], mock_pid: int) -> dict[str, Any]:
        args = [str(self._file(body)), system.key]
        if system.headers:
            args.append(str(self._file("".join(f"{k}: {v}\n" for k, v in system.headers.items()).encode())))
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{math.ceil(duration_s) + 30}s", "--timeout", "10s",
               "-s", str(LOAD_LUA), f"http://127.0.0.1:{system.port}{path}", "--", *args]
        return self._measured(system, mock_pid, lambda: self._run_wrk(cmd, duration_s, tick))

    def _run_wrk(self, cmd: list[str], duration_s: float, tick: Callable[[], None]) -> dict[str, Any]:
        return run_wrk(self.setup.children, cmd, duration_s, tick)

    def ttfb(self, system: Served, path: str, body: bytes, duration_s: float, tick: Callable[[], None],
             mock_pid: int) -> dict[str, Any]:
        return self._measured(system, mock_pid, lambda: ttfb_loop(system, path, body, duration_s, tick))

    def _measured(self, system: Served, mock_pid: int, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``run`` plus the serving tree's CPU per request, the mock's and wrk's CPU and both cores' busy %."""
        cpu0, mock0, kids0 = tree_cpu(system.pid), cpu_seconds(mock_pid), os.times()
        cores0, t0 = core_times(), time.perf_counter()
        result = run()
        wall = time.perf_counter() - t0
        cpu, mock, kids, cores1 = tree_cpu(system.pid) - cpu0, cpu_seconds(mock_pid) - mock0, os.times(), core_times()
        n = result["requests"]
        result["server_cpu_us_per_req"] = cpu / n * 1e6 if n else 0.0
        result["server_cpu_pct"] = 100 * cpu / wall
        result["mock_cpu_pct"] = 100 * mock / wall if system.name != "direct" else 0.0
        result["wrk_cpu_pct"] = 100 * (kids.children_user + kids.children_system
                                       - kids0.children_user - kids0.children_system) / wall
        setup = self.setup
        result["server_core_busy_pct"] = core_busy_pct(cores0, cores1, setup.gateway_cpu)[0]
        result["load_core_busy_pct"] = core_busy_pct(cores0, cores1, setup.load_cpu)[0]
        return result


def _read_reply(client: RawHTTP) -> tuple[int, float]:
    """Status of the answer on ``client`` and when its first body byte came (perf_counter)."""
    while (end := client.buf.find(b"\r\n\r\n")) < 0:
        client._fill()
    head = client.buf[:end].decode("latin-1").lower()
    client.buf = client.buf[end + 4:]
    status = int(head[9:12])
    if not client.buf:
        client._fill()
    first = time.perf_counter()
    headers = dict(line.partition(":")[::2] for line in head.split("\r\n")[1:])
    if "content-length" in headers:
        client._take(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", ""):
        while size := int(client._take_line().split(b";")[0], 16):
            client._take(size + 2)
        while client._take_line():
            pass
    return status, first


def ttfb_loop(system: Served, path: str, body: bytes, duration_s: float, tick: Callable[[], None]) -> dict[str, Any]:
    """Streams one after another on one keep-alive connection (a bare socket: the client adds a few tens of
    microseconds, not aiohttp's hundreds): time to the first body byte and to the end."""
    client = RawHTTP(system.port)
    req = request_bytes(system.port, body, system.key, system.headers, path)
    first: list[float] = []
    total: list[float] = []
    errors = 0
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < duration_s:
            t0 = time.perf_counter()
            client.sock.sendall(req)
            status, t_first = _read_reply(client)
            errors += status != 200
            first.append(t_first - t0)
            total.append(time.perf_counter() - t0)
            tick()
    finally:
        client.close()
    seconds = time.perf_counter() - started
    return {"requests": len(first), "errors": errors, "seconds": round(seconds, 3), "rps": len(first) / seconds,
            "ttfb_p50_ms": percentile(first, 50) * 1000, "ttfb_p99_ms": percentile(first, 99) * 1000,
            "p50_ms": percentile(total, 50) * 1000, "p99_ms": percentile(total, 99) * 1000}


def full_reply(client: RawHTTP) -> tuple[int, dict[str, str], bytes]:
    while (end := client.buf.find(b"\r\n\r\n")) < 0:
        client._fill()
    lines = client.buf[:end].decode("latin-1").split("\r\n")
    client.buf = client.buf[end + 4:]
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if "content-length" in headers:
        return int(lines[0][9:12]), headers, client._take(int(headers["content-length"]))
    parts = []
    while size := int(client._take_line().split(b";")[0], 16):
        parts.append(client._take(size))
        client._take(2)
    while client._take_line():
        pass
    return int(lines[0][9:12]), headers, b"".join(parts)
