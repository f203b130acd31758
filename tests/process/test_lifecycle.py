"""The gateway as an operator runs it: a real process, real signals, real sockets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from gomodel_proxy.observability.metrics import FLUSH_S
from tests.support.http_sync import ConnectError, HTTPError, get, post, stream_lines

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_config(tmp_path: Path, *, grace_s: float = 10, chunk_delay_ms: float = 0, extra: str = "") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
server:
  host: 127.0.0.1
  shutdown_grace_s: {grace_s}
  log_format: json
{extra}
providers:
  demo:
    type: mock
    mock:
      chunk_delay_ms: {chunk_delay_ms}
      completion_tokens: 20
cache:
  dir: {tmp_path / "cache"}
"""
    )
    return path


class Gateway:
    def __init__(self, config: Path, port: int, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gomodel_proxy", "--config", str(config), "--port", str(port), *args],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so workers die with it
        )

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited early: {self.proc.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                if get(self.base + "/ready", timeout=1).status == 200:
                    return
            except HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("gateway not ready in time")

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err.decode()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[type[Gateway]]:
    started: list[Gateway] = []

    class Tracked(Gateway):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, **kw)  # type: ignore[arg-type]
            started.append(self)

    yield Tracked
    for gw in started:
        gw.kill()
        gw.proc.communicate(timeout=10)


def _chat(stream: bool) -> dict[str, object]:
    return {"model": "demo/mock-chat", "stream": stream, "messages": [{"role": "user", "content": "hello"}]}


def test_serves_and_logs_json_lines_without_secrets(tmp_path: Path, gateway_factory: type[Gateway]) -> None:
    secret = "sk-master-0123456789abcdef"
    config = _write_config(tmp_path, extra=f"  master_key: {secret}")
    gw = gateway_factory(config, _free_port())
    gw.wait_ready()
    headers = {"Authorization": f"Bearer {secret}", "X-Request-ID": "req-lifecycle-1"}
    r = post(gw.base + "/v1/chat/completions", _chat(False), headers=headers)
    assert r.status == 200
    assert r.json()["usage"]["completion_tokens"] == 20
    bad = post(gw.base + "/v1/chat/completions", _chat(False), headers={"Authorization": "Bearer nope"})
    assert bad.status == 401
    code, err = gw.stop()
    assert code == 0
    lines = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("event") == "request" and line.get("request_id") == "req-lifecycle-1"]
    assert len(access) == 1
    assert access[0]["provider"] == "demo" and access[0]["output_tokens"] == 20 and access[0]["status"] == 200
    assert "ttfb_ms" in access[0] and "latency_ms" in access[0]
    assert secret not in err and "nope" not in err
    assert any(line.get("event") == "stopped" for line in lines)


def test_sigterm_lets_streams_in_flight_finish(tmp_path: Path, gateway_factory: type[Gateway]) -> None:
    config = _write_config(tmp_path, grace_s=10, chunk_delay_ms=100)  # a 2 s stream
    gw = gateway_factory(config, _free_port())
    gw.wait_ready()
    lines = stream_lines(gw.base + "/v1/chat/completions", _chat(True))
    first = next(lines)
    assert first.startswith("data: ")
    gw.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # The listener is closed at once: a new connection is refused while the stream goes on.
    with pytest.raises(ConnectError):
        get(gw.base + "/health", timeout=1)
    rest = list(lines)
    assert "data: [DONE]" in rest
    code, err = gw.stop()
    assert code == 0, err


def test_sigterm_cuts_streams_past_the_grace_period(tmp_path: Path, gateway_factory: type[Gateway]) -> None:
    config = _write_config(tmp_path, grace_s=0.5, chunk_delay_ms=500)  # a 10 s stream
    gw = gateway_factory(config, _free_port())
    gw.wait_ready()
    started = time.monotonic()
    lines = stream_lines(gw.base + "/v1/chat/completions", _chat(True))
    next(lines)
    gw.proc.send_signal(signal.SIGTERM)
    rest = list(lines)
    assert "data: [DONE]" not in rest
    # The cut stream ends with an error event, so a client does not mistake it for a complete answer.
    assert orjson.loads(rest[-2].removeprefix("data: "))["error"]["code"] == "shutting_down"
    code, err = gw.stop()
    assert code == 0
    assert time.monotonic() - started < 8, "the grace period was not enforced"
    assert '"outcome":"cut_at_shutdown"' in err


def test_workers_share_the_port(tmp_path: Path, gateway_factory: type[Gateway]) -> None:
    config = _write_config(tmp_path)
    gw = gateway_factory(config, _free_port(), "--workers", "2")
    gw.wait_ready()
    for _ in range(20):
        assert post(gw.base + "/v1/chat/completions", _chat(False)).status == 200
    children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
    workers = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(workers) == 2
    # /metrics merges every worker's counters, whichever worker answers the scrape. A worker adds its
    # calls to the shared files in batches, at the latest metrics.FLUSH_S after a call: the other
    # worker's count may be that late.
    deadline = time.monotonic() + FLUSH_S + 2.0
    while True:
        metrics = get(gw.base + "/metrics").text
        served = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("gomodel_requests_total{") and 'endpoint="chat.completions"' in line
        ]
        if sum(served) == 20 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sum(served) == 20
    code, err = gw.stop()
    assert code == 0, err


def test_config_error_stops_start_up_naming_file_key_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  port: http\nproviders:\n  metrics:\n    type: mock\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gomodel_proxy", "--config", str(path)],
        cwd=ROOT, capture_output=True, timeout=30, check=False,
    )
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert f"{path}:2:3: server.port: expected a whole number" in err
    assert "Traceback" not in err


def test_reserved_provider_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("providers:\n  metrics:\n    type: mock\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gomodel_proxy", "check-config", "--config", str(path)],
        cwd=ROOT, capture_output=True, timeout=30, check=False,
    )
    assert proc.returncode == 2
    assert "providers.metrics: 'metrics' is reserved" in proc.stderr.decode()


def test_version_flag() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gomodel_proxy", "--version"], cwd=ROOT, capture_output=True, check=False
    )
    assert proc.returncode == 0
    assert proc.stdout.decode().startswith("gomodel-proxy ")
