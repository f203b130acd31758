"""The judge of gomodel-proxy's performance: the gateway next to a floor (the mock itself), a plain reverse
proxy (nginx) and, with ``--peers``, other AI gateways (LiteLLM, Portkey), all measured in the same run.

Why in one run: on a shared, noisy machine figures from different runs do not compare; the systems here take
turns phase by phase (A B C, then C B A, ...) for several rounds, and the medians are reported with their min
and max, so drift falls on every system alike and its size shows.

Layout: every system under test is pinned to core 0 (``taskset -c 0``; only the one under load is busy); the
mock upstream (bench/upstream.py), the load generator (``wrk -t1`` with bench/load.lua, or the many-streams
client of bench/perf_streams.py) and this driver share core 1. After each phase the driver waits until the
system measured is idle again (``Run.quiet``), so that what its phase left to do does not run into the next.
The figures say how busy each core was, so a result bounded by the load side shows as such.

Systems: ``direct`` (the mock: the floor), ``nginx`` (keep-alive reverse proxy), ``gateway-bare`` (no master
key, no usage records), ``gateway-prod`` (virtual-key auth, rate limit and budget in Redis, usage records in
PostgreSQL, file audit, the PII guardrail, metrics), and with ``--peers`` ``litellm`` and ``portkey``.

Usage (from the repository root)::

    .venv/bin/python bench/perf.py            # default run, about 9-10 minutes
    .venv/bin/python bench/perf.py --quick    # smoke run, under a minute
    .venv/bin/python bench/perf.py --peers    # also LiteLLM and Portkey (installed once into bench/.cache/peers)

Results: a table on stdout, ``bench/results/perf.json`` (every figure and every round's raw values) and
``bench/results/perf-latency.png`` (bench/README.md, "perf.py").
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_load import Load, Sampler, full_reply, tree_cpu, tree_rss
from perf_report import plot_latency, print_report, summarize_targets
from perf_streams import raise_nofile, request_bytes, run_streams
from perf_systems import Served, start_litellm, start_nginx, start_portkey
from run import (
    ANTHROPIC_MODEL,
    BENCH,
    BODY_PLAIN,
    BODY_STREAM,
    GOV_KEY,
    GOV_PRICE,
    MASTER_KEY,
    MODEL,
    REPO,
    BenchError,
    RawHTTP,
    RedisSide,
    Setup,
    claim_cores,
    core_busy_pct,
    core_times,
    create_virtual_key,
    free_port,
    machine_info,
    run_with_children,
    spawn_upstream,
    tail,
    wait_ready,
)

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
CORE_SYSTEMS = ("direct", "nginx", "gateway-bare", "gateway-prod")
PEER_SYSTEMS = ("litellm", "portkey")
GATEWAYS = ("gateway-bare", "gateway-prod")


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


#: Every system gets the same bodies (run.py's: a system prompt and a short user message, no PII).
BODY_TICKER = _json({**json.loads(BODY_PLAIN), "stream": True, "bench_ticker": True})
_ANTH = {"model": ANTHROPIC_MODEL, "max_tokens": 64, "system": "You are a helpful assistant. Answer briefly.",
         "messages": [{"role": "user", "content": "Say hello and offer help in one short sentence."}]}
BODY_ANTH = _json(_ANTH)  # direct to the mock's /v1/messages: the floor of the translated route
BODY_ANTH_STREAM = _json({**_ANTH, "stream": True})
BODY_TRANSLATED = _json({**json.loads(BODY_PLAIN), "model": ANTHROPIC_MODEL})  # chat in, Messages upstream
BODY_TRANSLATED_STREAM = _json({**json.loads(BODY_STREAM), "model": ANTHROPIC_MODEL})
PII_RAILS = ("guardrails:\n  - name: pii-redactor\n    enabled: true\n    priority: 10\n"
             "    config: {detect: [email, phone, ssn, credit_card, iban, ip], action: redact, restore: true, "
             "scan_output: false}\n")


# -- starting the systems -------------------------------------------------------------------------------
def start_mock(setup: Setup, chunks: int, gap_ms: float) -> Served:
    """The mock on the load core: unpaced /v1/messages streams, ticker-paced chat streams, Messages answers."""
    proc, port = spawn_upstream(setup, "--paced-chunks", str(chunks), "--paced-gap-ms", "0",
                                "--ticker-gap-ms", str(gap_ms), "--anthropic-nonstream", "--backlog", "8192")
    return Served("direct", port, proc.pid, proc, setup.workdir / "upstream.log")


class Prod:
    """The production chain's services: Redis (a key prefix of this run's own, deleted afterwards) and
    PostgreSQL (a schema of this run's own, dropped afterwards)."""

    def __init__(self, redis_url: str, pg_url: str) -> None:
        self.redis = RedisSide(redis_url)
        self.pg_url = pg_url
        self.schema = f"perf_{os.getpid()}_{os.urandom(3).hex()}"
        self.problem = f"Redis at {redis_url} unreachable ({self.redis.problem})" if self.redis.client is None else ""
        if not self.problem:
            try:
                self._pg("SELECT 1")
            except Exception as exc:
                self.problem = f"PostgreSQL at {pg_url} unreachable ({type(exc).__name__}: {exc})"[:300]

    def _pg(self, sql: str) -> Any:
        import asyncpg  # noqa: PLC0415 - a dependency of the gateway

        async def go() -> Any:
            conn = await asyncpg.connect(self.pg_url.replace("+asyncpg", ""), timeout=3)
            try:
                return await conn.fetchval(sql)
            finally:
                await conn.close()

        return asyncio.run(go())

    def usage_rows(self) -> int:
        with contextlib.suppress(Exception):
            return int(self._pg(f'SELECT count(*) FROM "{self.schema}".usage_records'))
        return -1

    def clean(self) -> dict[str, Any]:
        out: dict[str, Any] = {"redis_keys_deleted": self.redis.delete_keys()}
        try:
            self._pg(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            out["pg_schema_dropped"] = self.schema
        except Exception as exc:
            out["pg_schema_drop_error"] = f"{type(exc).__name__}: {exc}"
        return out


def gateway_config(setup: Setup, upstream_port: int, name: str, prod: Prod | None) -> Path:
    """Two providers on the same mock (``bench``: openai_compatible; ``bench-anthropic``: anthropic, for the
    translated route); bare: no master key, no usage records; prod: the whole production chain."""
    cache = setup.workdir / f"cache-{name}"
    text = ("server:\n  host: 127.0.0.1\n  log_level: warning\n  log_format: json\n  shutdown_grace_s: 1\n"
            + (f"  master_key: {MASTER_KEY}\n" if prod else "")
            + "features:\n"
            + ("  admin_api: true\n  usage_tracking: true\n  audit_logging: true\n" if prod
               else "  usage_tracking: false\n")
            + "providers:\n"
            f"  bench:\n    type: openai_compatible\n    base_url: http://127.0.0.1:{upstream_port}/v1\n"
            f"    api_key: bench-upstream-key\n    models: [{MODEL}]\n"
            f"  bench-anthropic:\n    type: anthropic\n    base_url: http://127.0.0.1:{upstream_port}/v1\n"
            f"    api_key: bench-upstream-key\n    models: [{ANTHROPIC_MODEL}]\n"
            f"cache:\n  dir: {cache}\n"
            "pricing:\n  models:\n"
            f"    openai_compatible/{MODEL}: {{input: {GOV_PRICE['input']}, output: {GOV_PRICE['output']}}}\n")
    if prod:
        rails = setup.workdir / "guardrails-prod.yaml"
        rails.write_text(PII_RAILS)
        text += (f"redis:\n  url: {prod.redis.url}\n  key_prefix: '{prod.redis.prefix}'\n"
                 f"database:\n  url: {prod.pg_url}\n  schema: {prod.schema}\n"
                 f"audit:\n  backend: file\n  path: {setup.workdir / 'audit' / 'audit.jsonl'}\n"
                 f"guardrails:\n  file: {rails}\n")
    path = setup.workdir / f"{name}.yaml"
    path.write_text(text)
    return path


def spawn_gateway(setup: Setup, config: Path, name: str, *, workers: int = 1,
                  cpus: str | None = None) -> tuple[Served, float]:
    """Start a gateway (pinned to ``cpus``, default the gateway core); return it once /ready answers 200,
    with the milliseconds from spawn to that answer."""
    port = free_port()
    log_path = setup.workdir / f"{name}.log"
    cmd = [sys.executable, "-m", "gomodel_proxy", "--config", str(config), "--port", str(port)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    cmd = ["taskset", "-c", cpus or str(setup.gateway_cpu), *cmd]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOMODEL")}
    with log_path.open("ab") as log:
        started = time.perf_counter()
        proc = setup.children.spawn(cmd, cwd=REPO, env=env, stdout=log, stderr=log)
    ms = wait_ready(proc, port, started, log_path, name)
    return Served(name, port, proc.pid, proc, log_path), ms


def cold_starts(setup: Setup, config: Path, name: str, runs: int) -> tuple[Served, list[float]]:
    """``runs`` spawns to /ready, the last one kept running as the system under test."""
    times = []
    for i in range(runs):
        served, ms = spawn_gateway(setup, config, name)
        times.append(round(ms, 1))
        print(f"{name}: cold start {i + 1}/{runs}: {ms:.0f} ms to a 200 from /ready", flush=True)
        if i < runs - 1:
            assert served.proc is not None
            setup.children.stop(served.proc)
    return served, times


def check(system: Served, direct: Served) -> list[str]:
    """Before timing: a non-streamed and a streamed request answered 200 (nginx and gateway-bare: with the
    mock's exact bytes; gateway-prod: with its virtual key's rate limit applied)."""
    problems = []
    for label, body in (("non-stream", BODY_PLAIN), ("stream", BODY_STREAM)):
        replies = {}
        for who in (direct, system):
            client = RawHTTP(who.port)
            try:
                client.sock.sendall(request_bytes(who.port, body, who.key, who.headers))
                replies[who.name] = full_reply(client)
            finally:
                client.close()
        status, headers, data = replies[system.name]
        if status != 200:
            problems.append(f"{label}: HTTP {status}: {data[:300]!r}")
            continue
        if system.name in ("nginx", "gateway-bare") and data != replies["direct"][2]:
            problems.append(f"{label}: the answer differs from the mock's ({len(data)} B)")
        if label == "stream" and not data.rstrip().endswith(b"data: [DONE]"):
            problems.append("stream: no data: [DONE] at the end")
        if system.name == "gateway-prod" and headers.get("x-ratelimit-limit-requests") != str(GOV_KEY["rpm"]):
            problems.append("no rate limit applied to the virtual key")
    return problems


# -- the run ---------------------------------------------------------------------------------------------
def ordered(names: list[str], turn: int) -> list[str]:
    """A B C, then C B A: drift favours no system."""
    return names if turn % 2 == 0 else names[::-1]


def med(values: Iterable[float]) -> dict[str, float]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": 0.0, "min": 0.0, "max": 0.0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


#: One phase's results for one system, round by round (None: not measured that round, the system was gone).
Rounds = list[dict[str, Any] | None]


def added(xs: Rounds, ys: Rounds, k: str) -> dict[str, float]:
    """Round by round: system minus direct (rounds where either is missing are left out)."""
    return med(a[k] - b[k] for a, b in zip(xs, ys, strict=True) if a and b)


class Run:
    """Everything one invocation measures, with the raw rounds kept for the JSON."""

    def __init__(self, args: argparse.Namespace, setup: Setup) -> None:
        self.args = args
        self.setup = setup
        self.load = Load(setup)
        self.sampler = Sampler()
        self.systems: dict[str, Served] = {}
        self.skipped: dict[str, str] = {}
        self.failures: list[str] = []
        self.raw: dict[str, Any] = {}
        self.prod: Prod | None = None
        self.events: list[dict[str, Any]] = []  # systems that exited during the run, and were restarted
        self.restarters: dict[str, Callable[[], Served]] = {}

    def add(self, served: Served) -> None:
        self.systems[served.name] = served
        self.sampler.pids[served.name] = served.pid

    def fail(self, system: Served, what: str) -> None:
        line = f"{system.name}: {what}"
        print(("FAILED " if system.must_not_fail else "failed (peer, not fatal) ") + line, flush=True)
        if system.must_not_fail:
            self.failures.append(line)

    def measure(self, name: str, what: str, fn: Callable[[Served], dict[str, Any]]) -> dict[str, Any] | None:
        """``fn`` on the system ``name``; if the system died meanwhile (the host's other users may stop it), it
        is restarted and the phase measured once more: a death with an error code is a failure, a stop by a
        signal is recorded as an event only. None when the system is gone."""
        for _attempt in range(2):
            s = self.systems.get(name)
            if s is None:
                return None
            try:
                r: dict[str, Any] | None = fn(s)
                problem = ""
            except (OSError, BenchError) as exc:
                r, problem = None, f"{type(exc).__name__}: {exc}"
            self.quiet(s)
            if s.proc is None or s.proc.poll() is None:
                if problem:
                    self.fail(s, f"{what}: {problem}")
                return r
            self.revive(s, what)
        return None

    def quiet(self, s: Served, step_s: float = 0.1, limit_s: float = 3.0) -> None:
        """Wait until the system just measured has done the work its phase left behind (a usage batch, the
        audit drain, a metrics flush): at most one clock tick of CPU in ``step_s``, for at most ``limit_s``.
        Otherwise that work ran on into the next system's phase, on the same core, as that one's latency."""
        deadline = time.perf_counter() + limit_s
        last = tree_cpu(s.pid)
        while time.perf_counter() < deadline:
            time.sleep(step_s)
            now = tree_cpu(s.pid)
            if now - last <= 1.5 / os.sysconf("SC_CLK_TCK"):
                return
            last = now

    def revive(self, s: Served, what: str) -> None:
        assert s.proc is not None
        code = s.proc.returncode
        event = {"system": s.name, "phase": what, "exit_code": code, "log_tail": tail(s.log) if s.log else ""}
        self.events.append(event)
        print(f"{s.name} exited (code {code}) during {what}; log tail:\n{event['log_tail']}", flush=True)
        if code not in (0, -signal.SIGTERM, -signal.SIGKILL, -signal.SIGINT):
            self.fail(s, f"exited with code {code} during {what}")
        self.setup.children.stop(s.proc)
        restart = self.restarters.get(s.name)
        if s.name == "direct":
            raise BenchError(f"the mock is gone (exit {code}): {event['log_tail']}")
        if restart is None:
            self.skipped[s.name] = f"exited (code {code}) during {what}"
            self._drop(s.name)
            return
        new = restart()
        new.key, new.headers, new.must_not_fail, new.note = s.key, s.headers, s.must_not_fail, s.note
        self.add(new)
        print(f"{s.name}: restarted on port {new.port}; the phase is measured again", flush=True)

    def wrk(self, name: str, path: str, body: bytes, conc: int, duration: float) -> dict[str, Any] | None:
        def go(s: Served) -> dict[str, Any]:
            result = self.load.wrk(s, path, body, conc, duration, self.sampler.tick, self.systems["direct"].pid)
            if result["errors"] and (s.proc is None or s.proc.poll() is None):
                self.fail(s, f"{result['errors']} failed requests (non-2xx or socket errors "
                             f"{result['error_kinds']}) of {result['requests']} at c={conc} {path}")
            return result

        return self.measure(name, f"wrk c={conc} {path}", go)

    def ttfb(self, name: str, path: str, body: bytes, duration: float) -> dict[str, Any] | None:
        def go(s: Served) -> dict[str, Any]:
            result = self.load.ttfb(s, path, body, duration, self.sampler.tick, self.systems["direct"].pid)
            if result["errors"]:
                self.fail(s, f"{result['errors']} failed streamed requests of {result['requests']}")
            return result

        return self.measure(name, f"ttfb {path}", go)

    # -- set-up
    def start(self) -> None:
        args, setup = self.args, self.setup
        mock = start_mock(setup, args.chunks, args.gap_ms)
        self.add(mock)
        nginx = start_nginx(setup.children, setup.workdir, mock.port, setup.gateway_cpu)
        if isinstance(nginx, str):
            self.skipped["nginx"] = nginx
            print(f"nginx skipped: {nginx}")
        else:
            self.add(nginx)
            self.restarters["nginx"] = lambda: _started(start_nginx(setup.children, setup.workdir, mock.port,
                                                                    setup.gateway_cpu))
        self.cold: dict[str, list[float]] = {}
        #: RSS at rest before the first admin call (which loads SQLAlchemy), where one is made: gateway-prod.
        self.rss_before_admin: dict[str, float] = {}
        bare_config = gateway_config(setup, mock.port, "gateway-bare", None)
        bare, self.cold["gateway-bare"] = cold_starts(setup, bare_config, "gateway-bare", args.startup_runs)
        self.add(bare)
        self.restarters["gateway-bare"] = lambda: spawn_gateway(setup, bare_config, "gateway-bare")[0]
        self.prod = Prod(args.redis_url, args.pg_url)
        if self.prod.problem:
            self.skipped["gateway-prod"] = self.prod.problem
            print(f"gateway-prod skipped: {self.prod.problem}")
        else:
            config = gateway_config(setup, mock.port, "gateway-prod", self.prod)
            prod, self.cold["gateway-prod"] = cold_starts(setup, config, "gateway-prod", args.startup_runs)
            # At rest before any admin call: the first one (here, making the virtual key) loads SQLAlchemy.
            time.sleep(0.5)
            self.rss_before_admin["gateway-prod"] = tree_rss(prod.pid)
            prod.key = create_virtual_key(prod.port)
            self.add(prod)
            self.restarters["gateway-prod"] = lambda: spawn_gateway(setup, config, "gateway-prod")[0]
        if args.peers:
            starters: list[tuple[str, Callable[[], Served | str]]] = [
                ("litellm", lambda: start_litellm(setup.children, setup.workdir, mock.port, MODEL, setup.gateway_cpu)),
                ("portkey", lambda: start_portkey(setup.children, setup.workdir, mock.port, setup.gateway_cpu))]
            for name, starter in starters:
                print(f"{name}: installing (cached in bench/.cache/peers) and starting ...", flush=True)
                got = starter()
                if isinstance(got, str):
                    self.skipped[name] = got
                    print(f"{name} skipped: {got}")
                else:
                    self.add(got)
                    print(f"{name}: ready on port {got.port}")
        time.sleep(0.5)
        self.rss_idle = {name: tree_rss(s.pid) for name, s in self.systems.items()}
        self.rss_rounds: dict[str, list[float]] = {}
        self.rss_after: dict[str, float] = {}
        self.rss_after_streams: dict[str, float] = {}
        for name, s in list(self.systems.items()):
            if name == "direct":
                continue
            problems = check(s, mock)
            if problems:
                self.fail(s, "check failed: " + "; ".join(problems) + (f"\n{tail(s.log)}" if s.log else ""))
                if not s.must_not_fail and all(p.startswith("stream:") for p in problems):
                    s.stream_problem = "; ".join(problems)  # a peer that fails streams: measured without them
                    self.skipped[f"{name} (streaming phases)"] = s.stream_problem
                elif not s.must_not_fail:
                    self.skipped[name] = "check failed: " + "; ".join(problems)
                    self._drop(name)
        for name in list(self.systems):  # warm-up: pools, allocator, lazily built objects
            self.wrk(name, CHAT, BODY_PLAIN, 64, args.warmup)
            if not self.systems[name].stream_problem:
                self.ttfb(name, CHAT, BODY_STREAM, args.warmup / 2)

    def _drop(self, name: str) -> None:
        s = self.systems.pop(name)
        self.sampler.pids.pop(name, None)
        if s.proc is not None:
            self.setup.children.stop(s.proc)

    # -- phases
    def run(self) -> None:
        args = self.args
        names = list(self.systems)
        sweep: dict[str, dict[str, Rounds]] = {str(c): {n: [] for n in names} for c in args.levels}
        ttfb: dict[str, Rounds] = {n: [] for n in names}
        tr_names = ["direct", *[g for g in GATEWAYS if g in self.systems]]
        translated: dict[str, dict[str, Rounds]] = {k: {n: [] for n in tr_names}
                                                                 for k in ("c1", "c64", "ttfb")}
        self.raw.update(sweep=sweep, ttfb=ttfb, translated=translated)
        for rnd in range(args.rounds):
            for i, conc in enumerate(args.levels):
                for name in ordered(names, rnd + i):
                    r = self.wrk(name, CHAT, BODY_PLAIN, conc, args.duration)
                    sweep[str(conc)][name].append(r)
                    self._say(rnd, f"c={conc}", name, r)
            for name in ordered(names, rnd):
                if self.systems[name].stream_problem:
                    ttfb[name].append(None)
                    continue
                r = self.ttfb(name, CHAT, BODY_STREAM, args.ttfb_duration)
                ttfb[name].append(r)
                self._say(rnd, "ttfb", name, r)
            for name in ordered(tr_names, rnd):
                plain, stream, path = ((BODY_ANTH, BODY_ANTH_STREAM, MESSAGES) if name == "direct"
                                       else (BODY_TRANSLATED, BODY_TRANSLATED_STREAM, CHAT))
                for key, conc in (("c1", 1), ("c64", 64)):
                    r = self.wrk(name, path, plain, conc, args.tr_duration)
                    translated[key][name].append(r)
                    self._say(rnd, f"tr {key}", name, r)
                r = self.ttfb(name, path, stream, args.ttfb_duration)
                translated["ttfb"][name].append(r)
                self._say(rnd, "tr ttfb", name, r)
            for name, s in self.systems.items():  # a leak shows as growth from round to round
                self.rss_rounds.setdefault(name, []).append(tree_rss(s.pid))
        time.sleep(1.5)
        self.rss_after = {name: tree_rss(s.pid) for name, s in self.systems.items()}
        self.workers_phase()
        self.paced_phase()
        time.sleep(1.5)
        self.rss_after_streams = {name: tree_rss(s.pid) for name, s in self.systems.items()}

    def _say(self, rnd: int, phase: str, name: str, r: dict[str, Any] | None) -> None:
        if r is None:
            print(f"round {rnd + 1}/{self.args.rounds} {phase:8} {name:13} (not measured: the system is gone)")
            return
        extra = f" ttfb p50 {r['ttfb_p50_ms']:6.3f} p99 {r['ttfb_p99_ms']:6.3f} ms" if "ttfb_p50_ms" in r else ""
        print(f"round {rnd + 1}/{self.args.rounds} {phase:8} {name:13} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:7.3f}"
              f"  p99 {r['p99_ms']:7.3f} ms  cpu {r['server_cpu_us_per_req']:6.1f} us/req  "
              f"load core {r['load_core_busy_pct']:3.0f}%{extra}", flush=True)

    def workers_phase(self) -> None:
        """gateway-bare pinned to one core vs ``--workers 2`` on both cores, at c=workers_conc."""
        args, setup = self.args, self.setup
        config = gateway_config(setup, self.systems["direct"].port, "gateway-w2", None)

        def start_w2() -> Served:
            both = f"{setup.gateway_cpu},{setup.load_cpu}"
            return spawn_gateway(setup, config, "gateway-w2", workers=2, cpus=both)[0]

        t0 = time.perf_counter()
        self.systems["gateway-w2"] = start_w2()  # not in the sampler: its RSS is not one of the table's
        self.restarters["gateway-w2"] = start_w2
        print(f"gateway-w2 (--workers 2, both cores): ready in {(time.perf_counter() - t0) * 1000:.0f} ms", flush=True)
        self.wrk("gateway-w2", CHAT, BODY_PLAIN, args.workers_conc, args.warmup)
        raw: dict[str, Rounds] = {"gateway-bare": [], "gateway-w2": []}
        for rnd in range(args.rounds):
            for name in ordered(list(raw), rnd):
                r = self.wrk(name, CHAT, BODY_PLAIN, args.workers_conc, args.duration)
                raw[name].append(r)
                self._say(rnd, f"w c={args.workers_conc}", name, r)
        self._drop("gateway-w2")
        self.raw["workers"] = raw

    def paced_phase(self) -> None:
        args = self.args
        paced: dict[str, dict[str, Rounds]] = {}
        for n in args.streams:
            names = [name for name in self.systems
                     if name in ("direct", "nginx", "gateway-bare")
                     or (name == "gateway-prod" and n <= args.prod_streams_max)
                     or (name in PEER_SYSTEMS and n <= 1000 and not self.systems[name].stream_problem)]
            paced[str(n)] = {name: [] for name in names}
            for rnd in range(args.stream_rounds):
                for name in ordered(names, rnd):
                    r = self.measure(name, f"{n} paced streams", partial(self.streams, n=n))
                    paced[str(n)][name].append(r)
                    if r is None:
                        continue
                    print(f"round {rnd + 1}/{args.stream_rounds} paced {n:>6,} {name:13} lost {r['lost_frames']:>6,}"
                          f"  delay p50 {r['delay_p50_us'] / 1000:7.2f} p99 {r['delay_p99_us'] / 1000:7.2f} ms"
                          f"  stretch {r['stretch_p50']:4.2f}  open peak {r['open_peak']:>6,}"
                          f"  rss {r['server_rss_peak_mb']:6.1f} MB  client lag p99 {r['client_lag_p99_ms']:5.1f} ms"
                          f"  {r['seconds']:5.1f} s", flush=True)
                    if r["lost_frames"]:
                        self.fail(self.systems[name], f"{r['lost_frames']} of {r['frames_expected']} frames lost in "
                                  f"{n} paced streams: {r['problems'][:3]} {r['connect_errors'][:2]}")
        self.raw["paced"] = paced

    def streams(self, system: Served, n: int) -> dict[str, Any]:
        peak = [0.0]
        last = [0.0]

        def sample() -> None:
            now = time.perf_counter()
            if now - last[0] >= 0.1:
                last[0] = now
                peak[0] = max(peak[0], tree_rss(system.pid))

        cpu0, cores0 = tree_cpu(system.pid), core_times()
        r = run_streams(system.port, BODY_TICKER, system.key, n, self.args.chunks, self.args.gap_ms / 1000,
                        spread_s=self.args.spread, timeout_s=self.args.stream_timeout, headers=system.headers,
                        sample=sample)
        cores1 = core_times()
        r["server_rss_peak_mb"] = peak[0]
        r["server_cpu_s"] = tree_cpu(system.pid) - cpu0
        r["server_core_busy_pct"] = core_busy_pct(cores0, cores1, self.setup.gateway_cpu)[0]
        r["load_core_busy_pct"] = core_busy_pct(cores0, cores1, self.setup.load_cpu)[0]
        time.sleep(0.3)  # let the closed connections settle before the next system
        return r

    # -- results
    def results(self) -> dict[str, Any]:
        args = self.args
        names = list(self.systems)
        sweep = self.raw["sweep"]
        out: dict[str, Any] = {
            "machine": {**machine_info(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
            "settings": {k: v for k, v in vars(args).items() if k != "output"} | {"output": str(args.output),
                                                                                  "wrk": shutil.which("wrk")},
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "systems": {n: {"port": s.port, "note": s.note, "must_not_fail": s.must_not_fail} for n, s in
                        self.systems.items()},
            "skipped": self.skipped, "failures": self.failures, "events": self.events, "raw": self.raw,
            "figures": {},
        }
        direct_c1 = sweep[str(args.levels[0])]["direct"]
        direct_tt = self.raw["ttfb"]["direct"]
        cpu_level = str(min(args.levels, key=lambda c: abs(c - 64)))
        for name in names:
            f: dict[str, Any] = {}
            c1 = sweep[str(args.levels[0])][name]
            f["c1"] = {k: med(r[k] for r in c1 if r) for k in ("p50_ms", "p99_ms", "rps")}
            f["added_c1"] = {k: added(c1, direct_c1, k) for k in ("p50_ms", "p99_ms")}
            tt = self.raw["ttfb"][name]
            if any(tt):
                f["ttfb"] = {k: med(r[k] for r in tt if r) for k in ("ttfb_p50_ms", "ttfb_p99_ms", "p50_ms")}
                f["added_ttfb"] = {k: added(tt, direct_tt, k) for k in ("ttfb_p50_ms", "ttfb_p99_ms")}
            f["sweep"] = {c: {k: med(r[k] for r in sweep[c][name] if r)
                              for k in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_req", "load_core_busy_pct",
                                        "server_core_busy_pct")} for c in sweep}
            ok = [(f["sweep"][c]["rps"]["median"], int(c)) for c in sweep if f["sweep"][c]["p99_ms"]["median"] < 10]
            best_any = max((f["sweep"][c]["rps"]["median"], int(c)) for c in sweep)
            f["best_rps_p99_under_10ms"] = {"rps": max(ok)[0], "concurrency": max(ok)[1]} if ok else None
            f["max_rps"] = {"rps": best_any[0], "concurrency": best_any[1]}
            f["cpu_us_per_req"] = {"concurrency": int(cpu_level),
                                   **f["sweep"][cpu_level]["server_cpu_us_per_req"]}
            idle, after, peak = self.rss_idle[name], self.rss_after.get(name, 0.0), self.sampler.peak.get(name, 0.0)
            by_round = self.rss_rounds.get(name, [])
            growth = by_round[-1] - by_round[0] if len(by_round) > 1 else 0.0
            # Grew: more after the last round of request load than after the first (the first round brings
            # the allocator's pools and the connections to their working size; a leak keeps adding).
            f["rss_mb"] = {"idle": idle, "idle_before_admin": self.rss_before_admin.get(name),
                           "peak_under_load": peak, "after": after, "by_round": by_round,
                           "after_streams": self.rss_after_streams.get(name, 0.0),
                           "growth": growth, "grew": growth > max(5.0, 0.1 * idle)}
            out["figures"][name] = f
        for n, per in self.raw["paced"].items():
            for name, rounds in per.items():
                fig = out["figures"][name].setdefault("paced", {})
                fig[n] = {"lost_frames": sum(r["lost_frames"] for r in rounds if r),
                          "frames_expected": sum(r["frames_expected"] for r in rounds if r),
                          "complete_streams": sum(r["complete"] for r in rounds if r),
                          **{k: med(r[k] for r in rounds if r) for k in
                             ("delay_p50_us", "delay_p99_us", "server_rss_peak_mb", "stretch_p50", "open_peak",
                              "client_lag_p99_ms", "load_core_busy_pct", "server_core_busy_pct", "seconds")}}
                if name != "direct" and "direct" in per:
                    fig[n]["added"] = {k: added(rounds, per["direct"], k)
                                       for k in ("delay_p50_us", "delay_p99_us")}
        tr = self.raw["translated"]
        out["translated"] = {}
        for name in tr["c1"]:
            t: dict[str, Any] = {
                "c1": {k: med(r[k] for r in tr["c1"][name] if r) for k in ("p50_ms", "p99_ms", "rps")},
                "c64": {k: med(r[k] for r in tr["c64"][name] if r) for k in ("rps", "p50_ms", "p99_ms",
                                                                        "server_cpu_us_per_req")},
                "ttfb": {k: med(r[k] for r in tr["ttfb"][name] if r) for k in ("ttfb_p50_ms", "ttfb_p99_ms")},
            }
            if name != "direct":
                t["added_c1"] = {k: added(tr["c1"][name], tr["c1"]["direct"], k)
                                 for k in ("p50_ms", "p99_ms")}
                t["added_ttfb"] = {k: added(tr["ttfb"][name], tr["ttfb"]["direct"], k)
                                   for k in ("ttfb_p50_ms", "ttfb_p99_ms")}
            out["translated"][name] = t
        out["cold_start_ms"] = {n: {"runs": runs, "median": statistics.median(runs)} for n, runs in self.cold.items()}
        w = self.raw["workers"]
        one, two = (med(r["rps"] for r in w[k] if r) for k in ("gateway-bare", "gateway-w2"))
        out["workers"] = {
            "concurrency": args.workers_conc,
            "one_pinned": {k: med(r[k] for r in w["gateway-bare"] if r) for k in
                           ("rps", "server_cpu_us_per_req", "wrk_cpu_pct", "mock_cpu_pct", "load_core_busy_pct",
                            "server_core_busy_pct", "p99_ms")},
            "two_unpinned": {k: med(r[k] for r in w["gateway-w2"] if r) for k in
                             ("rps", "server_cpu_us_per_req", "wrk_cpu_pct", "mock_cpu_pct", "load_core_busy_pct",
                              "server_core_busy_pct", "p99_ms", "server_cpu_pct")},
            "ratio": two["median"] / one["median"] if one["median"] else None,
        }
        wt = out["workers"]["two_unpinned"]
        # The load side (wrk + the mock) shares the 2 cores with the 2 workers: when it takes more than a third
        # of a core, or the cores are both nearly saturated, 2 workers cannot show 2x here.
        load_share = (wt["wrk_cpu_pct"]["median"] + wt["mock_cpu_pct"]["median"]) / 100
        both_busy = min(wt["load_core_busy_pct"]["median"], wt["server_core_busy_pct"]["median"])
        out["workers"]["load_side_cores"] = load_share
        out["workers"]["load_generator_bottleneck"] = load_share > 0.33 or both_busy > 90
        if self.prod is not None and "gateway-prod" in self.systems:
            out["prod_checks"] = self.prod_evidence()
        out["targets"] = summarize_targets(out)
        return out

    def prod_evidence(self) -> dict[str, Any]:
        """That the production chain really ran: usage rows in PostgreSQL, audit entries, Redis keys."""
        assert self.prod is not None
        prod = self.systems["gateway-prod"]
        redis_keys = self.prod.redis.count_keys()
        if prod.proc is not None:
            self.setup.children.stop(prod.proc, grace_s=15)  # a clean stop drains the usage and audit writers
        audit = self.setup.workdir / "audit"
        entries = sum(f.read_bytes().count(b'"kind":"request"') for f in audit.glob("*.jsonl")) if audit.is_dir() else 0
        return {"usage_rows": self.prod.usage_rows(), "audit_request_entries": entries, "redis_keys": redis_keys,
                "schema": self.prod.schema, "redis_prefix": self.prod.redis.prefix}


def _started(got: Served | str) -> Served:
    if isinstance(got, str):
        raise BenchError(got)
    return got


def suite(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    run = Run(args, setup)
    try:
        run.start()
        run.run()
        results = run.results()
    finally:
        if run.prod is not None and not run.prod.problem:
            cleaned = run.prod.clean()
            print(f"gateway-prod clean-up: {cleaned}")
        logs = args.output.parent / "perf-logs"  # the temp dir goes; the systems' logs stay for a post-mortem
        with contextlib.suppress(OSError):
            logs.mkdir(parents=True, exist_ok=True)
            for log in [*setup.workdir.glob("*.log"), *setup.workdir.glob("nginx/*.log")]:
                shutil.copy(log, logs / log.name)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="gomodel-proxy vs direct, nginx (and peers): bench/README.md, perf.py")
    p.add_argument("--quick", action="store_true", help="smoke run under a minute: fewer levels, 100 streams")
    p.add_argument("--peers", action="store_true",
                   help="also LiteLLM and Portkey (installed once into bench/.cache/peers/; slow the first time)")
    p.add_argument("--rounds", type=int, help="rounds of alternating phases, medians reported (default 3; quick 1)")
    p.add_argument("--duration", type=float, help="seconds per load phase (default 3; quick 0.5)")
    p.add_argument("--levels", help="comma-separated concurrencies of the sweep (default 1,8,16,32,48,64,128,256)")
    p.add_argument("--streams", help="comma-separated paced stream counts (default 1000,10000; quick 100)")
    p.add_argument("--output", type=Path, default=BENCH / "results" / "perf.json", help="JSON results file")
    p.add_argument("--gateway-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--pg-url", default=os.environ.get("GOMODEL_TEST_PG_URL", PG_URL))
    args = p.parse_args(argv)
    q = args.quick
    args.rounds = args.rounds or (1 if q else 3)
    args.duration = args.duration or (0.5 if q else 3.0)
    args.levels = [int(x) for x in (args.levels or ("1,32" if q else "1,8,16,32,48,64,128,256")).split(",")]
    if args.levels[0] != 1:
        args.levels.insert(0, 1)  # c=1 gives the added latency
    args.streams = [int(x) for x in (args.streams or ("100" if q else "1000,10000")).split(",")]
    args.stream_rounds = min(args.rounds, 2)
    args.prod_streams_max = 1000  # the production chain at 10,000 streams: 10,000 requests in 1 s, too slow
    args.ttfb_duration = 0.3 if q else 2.0
    args.tr_duration = 0.4 if q else 2.0
    args.warmup = 0.2 if q else 1.0
    args.startup_runs = 1 if q else 3
    args.workers_conc = 64
    args.chunks, args.gap_ms, args.spread = 20, 20.0, 1.0
    args.stream_timeout = 60.0 if q else 180.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("perf: wrk is not installed (apt-get install -y wrk); it is the load generator", file=sys.stderr)
        return 2
    refused = claim_cores(args)
    if refused is not None:
        return refused
    nofile = raise_nofile()  # inherited by every process started from here: 10,000 streams need it
    # The gateway as installed: its bytecode compiled (an editable install leaves it to each start, which
    # cold start would then measure where PYTHONDONTWRITEBYTECODE is set). Quick when nothing changed.
    compileall.compile_dir(str(REPO / "gomodel_proxy"), quiet=1, workers=0)
    started = time.perf_counter()
    results = run_with_children(args, "gomodel-perf-", suite)
    if isinstance(results, int):
        return results
    results["settings"]["nofile_limit"] = nofile
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    png = args.output.with_name(f"{args.output.stem}-latency.png")  # perf.json -> perf-latency.png
    plot_latency(results, png)
    print_report(results)
    print(f"\nresults written to {args.output} and {png} ({results['elapsed_s']:.0f} s)")
    if results["failures"]:
        print(f"\nFAILED: {len(results['failures'])} problem(s) on systems that must not fail:")
        for line in results["failures"]:
            print(f"  - {line[:500]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
