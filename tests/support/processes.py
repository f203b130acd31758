"""Gateway processes driven from an async test: started as an operator would, stopped with SIGTERM.

    gw = GatewayProcess(config_path, log_path=tmp_path / "gw.log")
    await gw.wait_ready()
    ...                                  # gw.base is http://127.0.0.1:<port>
    code = await gw.stop()               # SIGTERM, then waits (asynchronously) for the exit
    gw.log_events()                      # its JSON log lines, parsed

Unlike ``tests/process/test_lifecycle.py``'s blocking helper, everything here awaits: a ``TcpProxy`` in
the test's event loop keeps forwarding (the database, Redis) while a process starts and shuts down.
The process's output goes to a file, never a pipe: a busy gateway fills a pipe nobody reads and blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """``python -m gomodel_proxy --config <config> --port <port>`` with its output in ``log_path``."""

    def __init__(self, config: Path, *, log_path: Path, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gomodel_proxy", "--config", str(config), "--port", str(self.port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() takes any worker with it
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"gateway exited early ({self.proc.returncode}):\n{self.log_text()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(self.base + "/ready", timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise AssertionError(f"gateway not ready in {timeout} s:\n{self.log_text()}")

    async def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait for the exit without blocking the loop; SIGKILL past ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.proc.poll() is None:
            self.kill()
            raise AssertionError(f"gateway did not stop within {timeout} s of SIGTERM:\n{self.log_text()}")
        self._reap()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the process group (cleanup after a failure); safe to call more than once."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self._reap()

    def _reap(self) -> None:
        if not self._log.closed:
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON lines of its log (``server.log_format: json``)."""
        events = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    events.append(orjson.loads(line))
        return events
