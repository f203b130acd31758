"""The systems of bench/perf.py that are not gomodel-proxy: nginx, and the peers LiteLLM and Portkey.

nginx is the yardstick of a plain reverse proxy (C, one worker); LiteLLM and Portkey are other AI gateways,
installed on demand (``--peers``) into ``bench/.cache/peers/`` so that a second run reuses the install. Each
is pinned to the gateway's core. Anything that cannot be installed or started is reported with the reason,
never fatal: the run goes on without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from run import BENCH, Children, free_port, probe, tail

PEERS_DIR = BENCH / ".cache" / "peers"
LITELLM_VENV = PEERS_DIR / "litellm-venv"
PORTKEY_DIR = PEERS_DIR / "portkey"
PORTKEY_START = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
LITELLM_KEY = "sk-bench-" + "0" * 32


@dataclass
class Served:
    """A started system: where to send requests, whose CPU and memory to read, what to send along."""

    name: str
    port: int
    pid: int
    proc: subprocess.Popen[Any] | None
    log: Path | None
    key: str = "none"
    headers: dict[str, str] = field(default_factory=dict)
    must_not_fail: bool = True
    note: str = ""
    stream_problem: str = ""  # a peer whose streamed answers fail its check: measured without streams


def start_nginx(children: Children, workdir: Path, upstream_port: int, cpu: int) -> Served | str:
    """nginx as a plain keep-alive reverse proxy in front of the mock; a reason string when it cannot run."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        return "nginx is not installed (apt-get install -y nginx)"
    root = workdir / "nginx"
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = root / "nginx.conf"
    # worker_connections: 2 per stream (client + upstream); the process's file limit caps it anyway
    conf.write_text(f"""daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 40000; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream mock {{ server 127.0.0.1:{upstream_port}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
""")
    log = root / "stderr.log"
    with log.open("ab") as out:
        proc = children.spawn([nginx, "-c", str(conf), "-p", str(root)], cpu=cpu, stdout=out, stderr=out)
    deadline = time.perf_counter() + 10
    while probe(port, "/v1/models") is None:
        if proc.poll() is not None or time.perf_counter() > deadline:
            children.stop(proc)
            return f"nginx did not start: {tail(log)} {tail(root / 'error.log')}"
        time.sleep(0.01)
    return Served("nginx", port, proc.pid, proc, root / "error.log")


# -- peers (--peers) ------------------------------------------------------------------------------
def _install(cmd: list[str], log: Path, timeout_s: float) -> str | None:
    """Run an install step, its output to ``log``; None when it worked, else why not."""
    print(f"peers: {' '.join(cmd)} (log: {log})", flush=True)
    try:
        with log.open("ab") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=out, timeout=timeout_s, check=False).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if rc == 0 else f"exit {rc}: {tail(log, 5)}"


def install_litellm() -> str | None:
    """``litellm[proxy]`` in a venv of its own (its pins must not touch the project's .venv)."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return None
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    log = PEERS_DIR / "litellm-install.log"
    if not (LITELLM_VENV / "bin" / "python").exists():
        problem = _install([sys.executable, "-m", "venv", str(LITELLM_VENV)], log, 120)
        if problem:
            return f"venv: {problem}"
    problem = _install([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], log, 1200)
    if problem or not exe.exists():
        return f"pip install 'litellm[proxy]': {problem or 'no litellm command afterwards'}"
    return None


def install_portkey() -> str | None:
    """``@portkey-ai/gateway`` from npm into its own prefix; run with node."""
    if PORTKEY_START.exists():
        return None
    if shutil.which("npm") is None or shutil.which("node") is None:
        return "node/npm are not installed (apt-get install -y nodejs npm)"
    PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
    problem = _install(["npm", "install", "--prefix", str(PORTKEY_DIR), "--no-audit", "--no-fund",
                        "@portkey-ai/gateway"], PEERS_DIR / "portkey-install.log", 900)
    if problem or not PORTKEY_START.exists():
        return f"npm install @portkey-ai/gateway: {problem or 'no build/start-server.js afterwards'}"
    return None


def _wait_ready(children: Children, proc: subprocess.Popen[Any], port: int, path: str, log: Path,
                timeout_s: float, ok: set[int] | None = None) -> str | None:
    deadline = time.perf_counter() + timeout_s
    while True:
        status = probe(port, path)
        if status is not None and (ok is None or status in ok):
            return None
        if proc.poll() is not None:
            return f"exited with code {proc.returncode}: {tail(log, 8)}"
        if time.perf_counter() > deadline:
            children.stop(proc)
            return f"not ready after {timeout_s:.0f} s: {tail(log, 8)}"
        time.sleep(0.1)


def start_litellm(children: Children, workdir: Path, upstream_port: int, model: str, cpu: int) -> Served | str:
    problem = install_litellm()
    if problem:
        return problem
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {model}\n"
        "    litellm_params:\n"
        f"      model: openai/{model}\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: bench-upstream-key\n"
        "litellm_settings:\n  drop_params: true\n  telemetry: false\n"
        # recent LiteLLM refuses to start without a master key: the bench one, sent as the bearer key
        f"general_settings:\n  master_key: {LITELLM_KEY}\n")
    port = free_port()
    log = workdir / "litellm.log"
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"}
    with log.open("ab") as out:
        proc = children.spawn([str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
                               "--port", str(port), "--num_workers", "1"],
                              cpu=cpu, stdout=out, stderr=out, env=env, cwd=workdir)
    problem = _wait_ready(children, proc, port, "/health/readiness", log, 120, {200})
    if problem:
        return f"litellm {problem}"
    return Served("litellm", port, proc.pid, proc, log, key=LITELLM_KEY, must_not_fail=False,
                  note="litellm proxy, 1 worker")


def start_portkey(children: Children, workdir: Path, upstream_port: int, cpu: int) -> Served | str:
    problem = install_portkey()
    if problem:
        return problem
    port = free_port()
    log = workdir / "portkey.log"
    env = {**os.environ, "NODE_ENV": "production"}
    with log.open("ab") as out:
        proc = children.spawn(["node", str(PORTKEY_START), f"--port={port}", "--headless"],
                              cpu=cpu, stdout=out, stderr=out, env=env, cwd=PORTKEY_DIR)
    problem = _wait_ready(children, proc, port, "/", log, 60)
    if problem:
        return f"portkey {problem}"
    headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": f"http://127.0.0.1:{upstream_port}/v1"}
    return Served("portkey", port, proc.pid, proc, log, headers=headers, must_not_fail=False,
                  note="@portkey-ai/gateway on node")
