"""SIGHUP on a real gateway process, sent by ``gomodel-proxy reload --pid-file``: the configuration is read
again while a keep-alive connection stays open and a stream in flight finishes intact."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.processes import ROOT, GatewayProcess


def write_config(path: Path, cache: Path, models: dict[str, str]) -> None:
    path.write_text(json.dumps({
        "server": {"host": "127.0.0.1", "shutdown_grace_s": 5, "log_format": "json"},
        "providers": {"demo": {"type": "mock", "mock": {"chunk_delay_ms": 20, "completion_tokens": 30}}},
        "models": models,
        "cache": {"dir": str(cache)},
    }), encoding="utf-8")


class KeepAlive:
    """One HTTP/1.1 connection, used for several requests in turn (Content-Length answers only)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> KeepAlive:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await self.writer.drain()
        status_line = await asyncio.wait_for(self.reader.readline(), 10)
        assert status_line, "the gateway closed the keep-alive connection"
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers["content-length"]))
        return int(status_line.split()[1]), headers, body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[GatewayProcess, Path]]:
    config = tmp_path / "config.yaml"
    write_config(config, tmp_path / "cache", {"fast": "demo/m"})
    gw = GatewayProcess(config, log_path=tmp_path / "gw.log")
    try:
        await gw.wait_ready()
        yield gw, config
    finally:
        gw.kill()


async def reload_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gomodel_proxy", "reload", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def wait_event(gw: GatewayProcess, event: str, count: int = 1, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in gw.log_events() if e.get("event") == event]
        if len(found) >= count:
            return found[count - 1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event!r} in the log:\n{gw.log_text()}")


def listed(body: bytes) -> set[str]:
    return {m["id"] for m in json.loads(body)["data"]}


async def test_sighup_reloads_without_dropping_a_connection(gateway: tuple[GatewayProcess, Path]) -> None:
    gw, config = gateway
    pid_file = config.parent / "cache" / "gomodel.pid"
    assert pid_file.read_text().strip() == str(gw.pid)

    conn = await KeepAlive.open(gw.port)
    status, _, body = await conn.get("/v1/models")
    assert status == 200 and "fast" in listed(body) and "quick" not in listed(body)

    async with aiohttp.ClientSession() as http:
        request = {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with http.post(f"{gw.base}/v1/chat/completions", json=request) as stream:
            assert stream.status == 200
            lines = [await stream.content.readline()]

            write_config(config, config.parent / "cache", {"fast": "demo/m", "quick": "demo/q"})
            code, out = await reload_cli("--pid-file", str(pid_file))
            assert code == 0, out
            event = await wait_event(gw, "config reloaded")
            assert event["changed"] == ["models.quick"] and event["trigger"] == "SIGHUP"

            lines += [line async for line in stream.content if line.strip()]
    assert lines[-1].strip() == b"data: [DONE]"
    assert sum(line.startswith(b"data: {") for line in lines) >= 30

    # The same connection, still open, sees the new configuration.
    status, _, body = await conn.get("/v1/models")
    assert status == 200 and {"fast", "quick"} <= listed(body)

    # A broken file is refused: the problems are logged with the line, the old configuration serves on.
    config.write_text('{"server": {"port": "eighty"},\n "models": {"fast": "demo/m"}}', encoding="utf-8")
    code, out = await reload_cli("--pid-file", str(pid_file))
    assert code == 0, out
    refused = await wait_event(gw, "config reload refused; the running configuration is kept")
    assert any(f"{config}:1:" in p and "server.port" in p for p in refused["problems"]), refused
    status, _, body = await conn.get("/v1/models")
    assert status == 200 and {"fast", "quick"} <= listed(body)
    status, _, metrics = await conn.get("/metrics")
    assert b'gomodel_config_reloads_total{result="refused"} 1.0' in metrics
    assert b'gomodel_config_reloads_total{result="applied"} 1.0' in metrics
    await conn.close()

    assert await gw.stop() == 0
    assert not pid_file.exists()  # removed at exit
