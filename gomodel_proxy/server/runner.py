"""Running the gateway: one process on uvloop, or N worker processes sharing the port (SO_REUSEPORT).

Shutdown is graceful on SIGTERM and SIGINT: the listening socket closes at once, requests and streams
in flight get ``server.shutdown_grace_s`` to finish, then whatever remains is cancelled.

SIGHUP reloads the configuration (``server.reload``) without touching a connection; with ``--workers`` the
parent forwards it to every worker. The pid file (``<cache.dir>/gomodel.pid``, or ``--pid-file``) names the
process to signal (the parent with workers): written once SIGHUP is handled, removed at exit.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

from gomodel_proxy.config.schema import Config
from gomodel_proxy.observability.logging import configure_logging, get_logger
from gomodel_proxy.server import http1
from gomodel_proxy.server.app import create_app
from gomodel_proxy.server.pidfile import default_pid_file, remove_pid_file, write_pid_file
from gomodel_proxy.server.reload import RELOADER
from gomodel_proxy.server.state import STATE

#: Pending connections the kernel queues per listener; a burst of agent requests should not be refused.
_BACKLOG = 2048


async def serve(config: Config, *, host: str, port: int, reuse_port: bool = False,
                started: float | None = None, pid_file: Path | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    log = get_logger("gomodel_proxy")
    app = create_app(config)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,  # the gateway writes its own access line, with usage and timings
        handler_cancellation=True,  # a client that goes away cancels its upstream request at once
        # The app ends streams itself when the grace period is over (with an error event); aiohttp
        # waits a little longer so that those last events are written before connections close.
        shutdown_timeout=config.server.shutdown_grace_s + 1.0,
    )
    await runner.setup()
    listener = await http1.listen(app, runner, host, port, reuse_port=reuse_port, backlog=_BACKLOG)
    _tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app[RELOADER].on_signal)
    if pid_file is not None:
        write_pid_file(pid_file)
    log.info(
        "listening", host=host, port=port, pid=os.getpid(), providers=sorted(app[STATE].providers),
        startup_ms=round((time.perf_counter() - started) * 1000, 1) if started else None,
    )
    try:
        await stop.wait()
    finally:
        if pid_file is not None:
            remove_pid_file(pid_file)
    log.info("shutting down", grace_s=config.server.shutdown_grace_s, pid=os.getpid())
    listener.close()  # no new connections; those open finish within the grace period (app on_shutdown)
    await runner.cleanup()
    log.info("stopped", pid=os.getpid())


def _tune_gc() -> None:
    """Move start-up objects out of the collector's sight and collect young objects less often.

    A request leaves almost no cyclic garbage, yet with the default threshold (700) the young
    generation was collected every dozen requests (~0.65 ms each) and full collections walked the
    ~60k objects of start-up: measured, ~80 µs of CPU per request and the worst p99 pauses.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


def run(config: Config, *, host: str, port: int, workers: int, started: float | None = None,
        pid_file: str | os.PathLike[str] | None = None) -> None:
    configure_logging(config.server.log_level, config.server.log_format)
    # Until the loop handles it, a SIGHUP (whose default is to terminate) is ignored: a reload sent to a
    # gateway still starting must not stop it. Workers inherit the disposition through exec.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    path = Path(pid_file) if pid_file else default_pid_file(config)
    if workers <= 1:
        uvloop.run(serve(config, host=host, port=port, started=started, pid_file=path))
        return
    _run_workers(config, host=host, port=port, workers=workers, pid_file=path)


def _worker_main(config: Config, host: str, port: int) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until serve() handles it
    configure_logging(config.server.log_level, config.server.log_format)
    uvloop.run(serve(config, host=host, port=port, reuse_port=True))


def _run_workers(config: Config, *, host: str, port: int, workers: int, pid_file: Path | None = None) -> None:
    """Start ``workers`` processes that each bind the port with SO_REUSEPORT; forward signals to them."""
    if not hasattr(socket, "SO_REUSEPORT"):  # pragma: no cover - not on Linux
        raise SystemExit("--workers needs SO_REUSEPORT, which this system lacks; run one process per port")
    log = get_logger("gomodel_proxy")
    # Metrics from every worker are merged through files, so that any worker can answer /metrics.
    metrics_dir = tempfile.mkdtemp(prefix="gomodel-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    ctx = multiprocessing.get_context("spawn")
    procs: list[Any] = [
        ctx.Process(target=_worker_main, args=(config, host, port), name=f"gomodel-worker-{i}")
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    log.info("workers started", workers=workers, pids=[p.pid for p in procs])

    forwarded: set[int] = set()

    def forward(signum: int, _: Any) -> None:
        forwarded.add(signum)
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)

    def forward_reload(signum: int, _: Any) -> None:
        for p in procs:  # each worker reloads on its own (a worker still starting ignores it)
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signum)

    signal.signal(signal.SIGHUP, forward_reload)
    if pid_file is not None:
        write_pid_file(pid_file)
    try:
        for p in procs:
            p.join()
    finally:
        if pid_file is not None:
            remove_pid_file(pid_file)
    codes = [p.exitcode for p in procs]
    # A worker still starting when the signal came dies of it; that is a clean stop too.
    if any(code and -code not in forwarded for code in codes):
        raise SystemExit(f"a worker exited with an error: exit codes {codes}")
