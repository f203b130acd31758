"""What guardrails and the response cache cost, each against the same gateway without them, in one run.

Every figure compares gateway processes of the same build that differ only by their config, all pinned to
the same core (``taskset -c 0``; only the one under load is busy) and measured in alternating turns (the
order reversing every round), medians over rounds. The mock upstream, wrk and this driver share core 1,
as in bench/run.py, whose helpers this suite uses (processes, wrk, the paced-stream client, ``/proc``).

The gateways (no master key, ``usage_tracking: false``: nothing but the feature under test in the chain):

- ``off``: no guardrails, no cache. The baseline of every comparison.
- ``pii``: the PII redactor (email, phone, ssn, credit_card, iban, ip; redact, restore, scan_output).
- ``guard64`` / ``guard0``: the PII redactor and a regex guardrail (an AWS key pattern, block), both scanning
  the answer, with ``hold_back_chars`` 64 and 0.
- ``cache_local`` / ``cache_redis``: the response cache (``cache.responses``), in memory or in Redis
  (skipped, with the reason printed, when no Redis answers at ``--redis-url``).

Phases:

1. ``guardrails_load``: non-streamed chat at c=50 with a ~1.2 KB prompt holding an email, a phone number and
   a card number, ``off`` vs ``pii``: req/s, gateway CPU per request, latency p50/p99, and pii/off ratios.
2. ``guardrails_stream``: the per-chunk delay of paced streams (bench/upstream.py stamps each text chunk with
   its send time; the client subtracts it on arrival), ``off`` vs ``guard0`` vs ``guard64``, stream by stream
   in turns. The gateway's output filter may merge or split chunks (the hold-back window releases text only
   once ``hold_back_chars`` more have come), so the stamps are found in the concatenated answer text and each
   is dated by the read that completed it. guard0 - off is the guardrails' processing; guard64 - guard0 is
   the hold-back window, a delay by design.
3. ``cache``: the same non-streamed request repeated, at c=1 and c=50: every answer a cache hit (local,
   Redis) vs ``off``, where every request goes to the mock (the path a miss takes, without the cache's
   lookup and store).

Correctness, checked before timing (any failure stops the run, exit 1): a capturing upstream (a second
provider, model ``echo-model``, served by this driver) must never receive the email, phone or card through
a PII gateway (and must receive them through ``off``: the control), and its echo of the redacted prompt must
come back to the client restored; the PII gateways' answers must carry the mock's text; a repeated request
must come back with ``X-GoModel-Cache: HIT``. During the phases: any non-2xx or socket error stops the run;
the gateways' ``/metrics`` must show one input redaction per PII request and one cache hit (and no miss) per
cached request.

Usage (from the repository root)::

    .venv/bin/python bench/guardrails_cache.py           # 5 rounds x 5 s per phase, about 5 minutes
    .venv/bin/python bench/guardrails_cache.py --quick   # 1 round x 1 s: checks that it works

Results: a table on stdout and the figures in ``bench/results/guardrails_cache.json`` (bench/README.md,
"Guardrails and cache").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (
    BENCH,
    BODY_PACED,
    MODEL,
    PATH,
    REPO,
    BenchError,
    RawHTTP,
    RedisSide,
    RssPeak,
    Scenario,
    Setup,
    Target,
    _ratio,
    delay_stats,
    governance_config,
    measure,
    memory_mb,
    pick_loadgen,
    run_suite_main,
    start_gateway,
    start_upstream,
    summarize,
    tail,
    task_cpu_ns,
    timed_stream,
)

ECHO_MODEL = "echo-model"
#: What the PII guardrail must find and keep from the provider (and restore for the client).
EMAIL = "jane.doe@example-corp.com"
PHONE = "+1 415-555-0132"
CARD = "4111 1111 1111 1111"
PII_VALUES = (EMAIL, PHONE, CARD)
#: ~1.2 KB of prose with the three values inside, as a support request might read.
PROSE = (
    "Hello, I am writing about the invoice we received last month for the analytics subscription. Our finance "
    "team noticed that the amount charged does not match the plan we agreed on during the renewal call, and "
    "the statement lists two seats that we removed in the spring. Could you please look into this and tell me "
    "what the correct total should be? If a refund is due, please send it back to the same card we used for "
    f"the original payment, {CARD}, rather than issuing store credit. You can reach me by email at {EMAIL} "
    f"or by phone at {PHONE} on weekdays between nine and five Pacific time. I have attached nothing to this "
    "message because your upload form kept timing out, but I can forward the PDF of the statement if that "
    "helps. We have been customers for four years and have generally been happy with the service, the "
    "dashboards and the support, so I would like to settle this quickly and without escalation. Please also "
    "confirm whether the price increase mentioned in the newsletter applies to annual plans that were renewed "
    "before the announcement, and whether we need to do anything to keep the current terms. Thank you for "
    "your help, and I look forward to a summary of the corrected charges."
)
PII_MESSAGES = [{"role": "system", "content": "You are a helpful billing assistant. Answer briefly."},
                {"role": "user", "content": PROSE}]
BODY_PII = json.dumps({"model": MODEL, "messages": PII_MESSAGES, "max_tokens": 64}, separators=(",", ":")).encode()
BODY_ECHO = json.dumps({"model": ECHO_MODEL, "messages": PII_MESSAGES, "max_tokens": 64},
                       separators=(",", ":")).encode()
#: The text of the mock's non-streamed answer (bench/upstream.py): a guarded answer must still carry it.
MOCK_TEXT = "Hello! How can I help you today? I am happy to answer any question."

PII_GUARDRAIL = ("  - name: pii-redactor\n    priority: 10\n"
                 "    config: {detect: [email, phone, ssn, credit_card, iban, ip], action: redact, restore: true, "
                 "scan_output: true}\n")
REGEX_GUARDRAIL = ("  - {name: secrets, type: regex, priority: 5, config: {patterns: "
                   "[{name: aws-key, pattern: \"AKIA[0-9A-Z]{16}\", action: block}]}}\n")

GATEWAYS = {
    "off": "no guardrails, no cache",
    "pii": "pii-redactor (redact, restore, scan_output), hold_back_chars 64",
    "guard64": "pii-redactor + regex (aws-key, block), output scanned, hold_back_chars 64",
    "guard0": "as guard64 with hold_back_chars 0",
    "cache_local": "response cache, backend local",
    "cache_redis": "response cache, backend redis",
}
LOAD_SYSTEMS = ("off", "pii")
STREAM_SYSTEMS = ("off", "guard0", "pii", "guard64")
CACHE_SYSTEMS = ("off", "cache_local", "cache_redis")
LOAD_SCENARIO = Scenario("c50_pii", "non-stream, c=50, prompt with PII", BODY_PII, 50, "load")
CACHE_SCENARIOS = [Scenario("c1", "non-stream, c=1, same request repeated", BODY_PII, 1, "load"),
                   Scenario("c50", "non-stream, c=50, same request repeated", BODY_PII, 50, "load")]
#: A paced text chunk's text (bench/upstream.py ``paced_text``), found in the concatenated answer.
#: A stamp the output guardrail took for personal data (its digits for a phone number) shows as a placeholder.
_STAMP = re.compile(r"t=(?:(\d+)|\[[A-Z_]+_\d+\]) n=(\d+);")


# -- a capturing upstream: what the provider receives ---------------------------------------------------------
class EchoUpstream:
    """An OpenAI-compatible ``/v1/chat/completions`` on a thread of this driver, used only by the checks:
    it keeps every request body it receives and answers with the last user message as the assistant's text."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.closed = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner.bodies.append(body)
                try:
                    text = next(m["content"] for m in reversed(json.loads(body)["messages"]) if m["role"] == "user")
                except (ValueError, KeyError, StopIteration):
                    text = ""
                answer = json.dumps({
                    "id": "chatcmpl-echo", "object": "chat.completion", "created": 0, "model": ECHO_MODEL,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 300, "completion_tokens": 300, "total_tokens": 600},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.shutdown()
            self.server.server_close()


# -- the gateways -------------------------------------------------------------------------------------------------
def suite_config(setup: Setup, upstream_port: int, echo_port: int, name: str, redis: RedisSide) -> Path:
    """run.py's bare governance config (no master key, no usage records, provider ``bench``), plus the
    capturing provider and what ``name`` tests: guardrails (a file of their own) or the response cache."""
    path, _ = governance_config(setup, upstream_port, name, master=False, usage=False)
    text = path.read_text()
    echo = (f"  echo:\n    type: openai_compatible\n    base_url: http://127.0.0.1:{echo_port}/v1\n"
            f"    api_key: bench-upstream-key\n    models: [{ECHO_MODEL}]\n")
    text = text.replace("cache:\n", echo + "cache:\n", 1)
    if name in ("pii", "guard64", "guard0"):
        rails = setup.workdir / f"guardrails-{name}.yaml"
        rails.write_text("guardrails:\n" + PII_GUARDRAIL + (REGEX_GUARDRAIL if name != "pii" else ""))
        text += f"guardrails: {{file: {rails}, hold_back_chars: {0 if name == 'guard0' else 64}}}\n"
    if name.startswith("cache_"):
        backend = name.removeprefix("cache_")
        text = text.replace("cache:\n", f"cache:\n  backend: {backend}\n"
                                        "  responses: {enabled: true, ttl_s: 3600}\n", 1)
        if backend == "redis":
            text += f"redis:\n  url: {redis.url}\n  key_prefix: '{redis.prefix}'\n"
    path.write_text(text)
    return path


@dataclass
class Gateway:
    name: str
    target: Target
    log: Path
    startup_ms: float


def start_gateways(setup: Setup, echo_port: int, redis: RedisSide) -> dict[str, Gateway]:
    assert setup.upstream is not None
    out = {}
    for name, what in GATEWAYS.items():
        if name == "cache_redis" and redis.client is None:
            continue
        config = suite_config(setup, setup.upstream.port, echo_port, name, redis)
        log_name = f"gateway-{name}.log"
        _, target, ms = start_gateway(setup, config, log_name, name=name)
        out[name] = Gateway(name, target, setup.workdir / log_name, ms)
        print(f"gateway {name:12} ready in {ms:4.0f} ms, port {target.port}: {what}", flush=True)
    return out


def post(port: int, body: bytes) -> Any:
    client = RawHTTP(port)
    try:
        return client.request("POST", PATH, body)
    finally:
        client.close()


def metric_total(port: int, name: str, **labels: str) -> float:
    """Sum of a Prometheus counter's samples whose labels include ``labels`` (``/metrics``, open)."""
    client = RawHTTP(port)
    try:
        reply = client.request("GET", "/metrics")
    finally:
        client.close()
    if reply.status != 200:
        raise BenchError(f"GET /metrics on port {port} answered {reply.status}")
    total = 0.0
    for line in reply.body.decode().splitlines():
        if not line.startswith(name + "{"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def redactions(gw: Gateway) -> float:
    return metric_total(gw.target.port, "gomodel_guardrail_decisions_total", guardrail="pii-redactor",
                        stage="input", action="redact")


def cache_lookups(gw: Gateway, result: str) -> float:
    return metric_total(gw.target.port, "gomodel_cache_lookups_total", result=result)


def answer_text(body: bytes) -> str:
    try:
        return str(json.loads(body)["choices"][0]["message"]["content"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def run_checks(gateways: dict[str, Gateway], echo: EchoUpstream) -> list[dict[str, Any]]:
    """Before timing: what the provider receives, what the client reads, and that a repeat is a cache hit."""
    checks: list[dict[str, Any]] = []

    def check(system: str, what: str, problems: list[str]) -> None:
        checks.append({"system": system, "check": what, "ok": not problems, "problems": problems})
        if problems:
            raise BenchError(f"check failed, {system}: {what}: {'; '.join(problems)}\n"
                             f"gateway log:\n{tail(gateways[system].log)}")

    for name, gw in gateways.items():
        if name.startswith("cache_"):
            continue
        guarded = name != "off"
        echo.bodies.clear()
        reply = post(gw.target.port, BODY_ECHO)
        problems = [f"status {reply.status}: {reply.body[:300]!r}"] if reply.status != 200 else []
        if not problems and len(echo.bodies) != 1:
            problems.append(f"the capturing upstream received {len(echo.bodies)} requests, not 1")
        if not problems:
            sent = echo.bodies[0].decode()
            leaked = [v for v in PII_VALUES if v in sent]
            if guarded:
                problems += [f"the provider received {v!r}" for v in leaked]
                if "[EMAIL_" not in sent:
                    problems.append(f"no email placeholder in what the provider received: {sent[:300]!r}")
            elif leaked != list(PII_VALUES):
                problems.append(f"control: without guardrails the provider should receive all values, got {leaked}")
            text = answer_text(reply.body)
            missing = [v for v in PII_VALUES if v not in text]
            if missing:
                problems.append(f"the echoed prompt did not come back to the client restored: {missing} missing "
                                f"from {text[:300]!r}")
        check(name, "provider never receives the PII; the client reads it restored" if guarded else
              "control: the provider receives the PII unchanged (the check can see it)", problems)
        reply = post(gw.target.port, BODY_PII)
        problems = [f"status {reply.status}: {reply.body[:300]!r}"] if reply.status != 200 else []
        if not problems and answer_text(reply.body) != MOCK_TEXT:
            problems.append(f"answer text {answer_text(reply.body)!r}, not the mock's {MOCK_TEXT!r}")
        check(name, "non-stream answer to the PII prompt carries the mock's text", problems)
    for name, gw in gateways.items():
        if not name.startswith("cache_"):
            continue
        first, second = post(gw.target.port, BODY_PII), post(gw.target.port, BODY_PII)
        problems = [f"status {r.status}: {r.body[:300]!r}" for r in (first, second) if r.status != 200]
        seen = [first.headers.get("x-gomodel-cache"), second.headers.get("x-gomodel-cache")]
        if not problems and seen != ["MISS", "HIT"]:
            problems.append(f"X-GoModel-Cache of a request and its repeat: {seen}, expected ['MISS', 'HIT']")
        if not problems and answer_text(second.body) != MOCK_TEXT:
            problems.append(f"cached answer text {answer_text(second.body)!r}, not the mock's")
        check(name, "a request then its repeat: MISS then HIT, the mock's text", problems)
    return checks


# -- phases -----------------------------------------------------------------------------------------------------
def ordered(systems: list[str], turn: int) -> list[str]:
    return systems if turn % 2 == 0 else systems[::-1]


def load_phase(scenario: Scenario, gw: Gateway, args: argparse.Namespace, setup: Setup, loadgen: Any,
               rss: RssPeak, label: str, extra: dict[str, int] | None = None) -> dict[str, Any]:
    """One measured phase, refused if any request failed; counters of the gateway's /metrics around it."""
    pii = gw.name in ("pii", "guard64", "guard0")
    cached = gw.name.startswith("cache_")
    before = (redactions(gw) if pii else 0.0, cache_lookups(gw, "hit") if cached else 0.0,
              cache_lookups(gw, "miss") if cached else 0.0)
    result = measure(scenario, gw.target, args.duration, loadgen, rss, setup.load_cpu, extra_pids=extra)
    if result["errors"]:
        raise BenchError(f"{gw.name}, {label}: {result['errors']} of {result['requests']} requests failed "
                         f"(non-2xx or socket errors: {result.get('error_kinds')}); gateway log:\n{tail(gw.log)}")
    if result["requests"] == 0:
        raise BenchError(f"{gw.name}, {label}: no request answered")
    if pii:
        done = redactions(gw) - before[0]
        result["input_redactions"] = done
        if done < result["requests"]:
            raise BenchError(f"{gw.name}, {label}: {done:.0f} input redactions for {result['requests']} requests")
    if cached:
        hits, misses = cache_lookups(gw, "hit") - before[1], cache_lookups(gw, "miss") - before[2]
        result["cache_hits"], result["cache_misses"] = hits, misses
        if misses or hits < result["requests"]:
            raise BenchError(f"{gw.name}, {label}: {hits:.0f} cache hits and {misses:.0f} misses for "
                             f"{result['requests']} requests (every one should be a hit)")
    return result


@dataclass
class StreamReading:
    delays_ns: list[int]  # per paced text chunk whose stamp could be read: receive time - send time
    text_events: int  # events that carried text (the gateway may merge or split chunks)
    chars: int  # characters of text in the answer
    redacted: int  # stamps the guardrail replaced by a placeholder: their chunk came, its time is unreadable
    problems: list[str]


def stream_delays(status: int, events: list[tuple[int, bytes]], chunks: int) -> StreamReading:
    """Per paced text chunk: receive time - send time (ns), however the gateway cut the text into events.

    The stamps ``t=<ns> n=<n>;`` are searched in the concatenation of every chunk's ``delta.content``; a
    stamp is dated by the read that brought its last character. The whole text must be exactly the K
    stamps in order (nothing lost or altered), then ``finish_reason: stop`` and ``[DONE]``. The one change
    allowed: a send time replaced by a placeholder (``t=[PHONE_1] n=3;``). The PII guardrail scanning the
    answer sometimes takes a 12-13 digit time for a phone number (depending on the digits, hence on the
    host's uptime); that chunk is counted as ``redacted`` and left out of the delays.
    """
    if status != 200:
        return StreamReading([], 0, 0, 0, [f"HTTP {status}: {events[0][1][:200]!r}" if events else f"HTTP {status}"])
    text = ""
    ends: list[tuple[int, int]] = []  # (length of the text so far, receive time of the event that ended there)
    problems: list[str] = []
    finished = done = False
    carried = 0
    for received, raw in events:
        data = raw.removeprefix(b"data: ")
        if data == b"[DONE]":
            done = True
            continue
        if done:
            problems.append(f"an event after [DONE]: {raw[:120]!r}")
            continue
        try:
            event = json.loads(data)
        except ValueError:
            problems.append(f"not JSON: {raw[:120]!r}")
            continue
        if "error" in event:
            problems.append(f"error event: {raw[:200]!r}")
            continue
        for choice in event.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                text += piece
                ends.append((len(text), received))
                carried += 1
            finished = finished or choice.get("finish_reason") == "stop"
    delays, numbers, pos, cursor, redacted = [], [], 0, 0, 0
    for match in _STAMP.finditer(text):
        if match.start() != pos:
            problems.append(f"unexpected text in the answer: {text[pos:match.start()][:80]!r}")
        pos = match.end()
        while ends[cursor][0] < match.end():
            cursor += 1
        if match[1] is None:
            redacted += 1
        else:
            delays.append(ends[cursor][1] - int(match[1]))
        numbers.append(int(match[2]))
    if pos != len(text):
        problems.append(f"unexpected text at the end of the answer: {text[pos:][:80]!r}")
    if numbers != list(range(chunks)):
        problems.append(f"stamps not all there in order: got {numbers[:30]} of {chunks}")
    if not finished:
        problems.append("no finish_reason 'stop' chunk")
    if not done:
        problems.append("no data: [DONE]")
    return StreamReading(delays, carried, len(text), redacted, problems)


def paced_turns(gateways: dict[str, Gateway], seconds_per_route: float, chunks: int, turn: int,
                tick: Any) -> dict[str, dict[str, Any]]:
    """Paced streams on one keep-alive connection per gateway, taking turns stream by stream (the order
    reversing each cycle), until each had about ``seconds_per_route`` (as run.py's ``paced_run``)."""
    names = [n for n in STREAM_SYSTEMS if n in gateways]
    clients = {n: RawHTTP(gateways[n].target.port) for n in names}
    acc: dict[str, dict[str, Any]] = {n: {"delays_ns": [], "streams": 0, "cpu_ns": [], "text_events": [],
                                          "chars": [], "redacted": 0, "problems": []} for n in names}
    deadline = time.perf_counter() + seconds_per_route * len(names)
    try:
        while True:
            for name in ordered(names, turn):
                a, pid = acc[name], gateways[name].target.pid
                cpu_before = task_cpu_ns(pid)
                status, events = timed_stream(clients[name], BODY_PACED)
                time.sleep(0.002)  # the gateway ends its bookkeeping for the stream before its CPU is read
                a["cpu_ns"].append(task_cpu_ns(pid) - cpu_before)
                reading = stream_delays(status, events, chunks)
                a["delays_ns"] += reading.delays_ns
                a["text_events"].append(reading.text_events)
                a["chars"].append(reading.chars)
                a["redacted"] += reading.redacted
                a["streams"] += 1
                a["problems"] += [f"stream {a['streams']}: {p}" for p in reading.problems]
            turn += 1
            tick()
            if time.perf_counter() >= deadline:
                break
    finally:
        for client in clients.values():
            client.close()
    return acc


def detector_cpu(quick: bool) -> dict[str, Any]:
    """In-process, no sockets: ``PIIDetector.find`` (the pii-redactor's scan, in and out) on the texts this
    suite makes it read, ``perf_counter_ns`` around each call. Phone candidates (runs of 7+ digits) go to
    libphonenumber, the costly part: every paced stamp is one, ordinary prose has few."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the gateway's own code, as the gateway runs it (cwd=REPO)
    from gomodel_proxy.guardrails.pii import ALL_KINDS, PIIDetector  # noqa: PLC0415

    detector = PIIDetector(list(ALL_KINDS))
    now = time.monotonic_ns()
    stamps = "".join(f"t={now + 5_000_000 * n} n={n};" for n in range(8))
    words = "I am happy to help with the invoice and the two seats that were removed in the spring. " * 2
    texts = {"prompt": (f"the PII prompt ({len(PROSE):,} characters, 3 findings)", PROSE),
             "stamp_window": ("84 characters of paced stamps (64 held back + one chunk)", stamps[-84:]),
             "prose_window": ("84 characters of prose, no digits", words[:84])}
    out = {}
    for key, (label, text) in texts.items():
        for _ in range(5):
            detector.find(text)
        ns = []
        for _ in range(50 if quick else 1000):
            t0 = time.perf_counter_ns()
            detector.find(text)
            ns.append(time.perf_counter_ns() - t0)
        ns.sort()
        out[key] = {"label": label, "samples": len(ns), "findings": len(detector.find(text)),
                    "p50_us": ns[len(ns) // 2] / 1000, "p99_us": ns[int(len(ns) * 0.99) - 1] / 1000}
    return out


# -- the run -----------------------------------------------------------------------------------------------------
def run_suite(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    loadgen = pick_loadgen(args.loadgen, setup.children, setup.workdir)
    setup.upstream = upstream = start_upstream(setup, args.paced_chunks, args.paced_gap_ms)
    redis = RedisSide(args.redis_url)
    skipped = {}
    if redis.client is None:
        skipped["cache_redis"] = f"Redis at {args.redis_url} not usable ({redis.problem})"
        print(f"cache_redis skipped: {skipped['cache_redis']}", flush=True)
    echo = EchoUpstream()
    print(f"guardrails and cache: gateways on core {setup.gateway_cpu}; mock upstream, {loadgen.name} and this "
          f"driver on core {setup.load_cpu}; {args.rounds} rounds x {args.duration:g} s per phase", flush=True)
    try:
        gateways = start_gateways(setup, echo.port, redis)
        checks = run_checks(gateways, echo)
        echo.close()
        rss = RssPeak({n: gw.target.pid for n, gw in gateways.items()} | {"upstream": upstream.pid})
        rss_idle = {n: memory_mb(gw.target.pid) for n, gw in gateways.items()}
        redis_extra = {"redis": redis.pid} if redis.pid else None
        for name, gw in gateways.items():  # warm-up: pools, allocator, lazily built objects, first cache entry
            scenario = CACHE_SCENARIOS[1] if name.startswith("cache_") or name == "off" else LOAD_SCENARIO
            load_phase(scenario, gw, argparse.Namespace(duration=args.warmup), setup, loadgen, rss, "warm-up")
        stream_gws = {n: gateways[n] for n in STREAM_SYSTEMS}
        warm = paced_turns(stream_gws, 0.0, args.paced_chunks, 0, rss.tick)
        for name, acc in warm.items():
            if acc["problems"]:
                raise BenchError(f"the paced stream through {name} is not right: {acc['problems'][0]}\n"
                                 f"{tail(gateways[name].log)}")
        load_raw: dict[str, list[dict[str, Any]]] = {n: [] for n in LOAD_SYSTEMS}
        paced_raw: dict[str, list[dict[str, Any]]] = {n: [] for n in STREAM_SYSTEMS}
        cache_systems = [n for n in CACHE_SYSTEMS if n in gateways]
        cache_raw: dict[str, dict[str, list[dict[str, Any]]]] = {s.key: {n: [] for n in cache_systems}
                                                                  for s in CACHE_SCENARIOS}
        for rnd in range(args.rounds):
            for name in ordered(list(LOAD_SYSTEMS), rnd):
                result = load_phase(LOAD_SCENARIO, gateways[name], args, setup, loadgen, rss, f"round {rnd + 1}")
                load_raw[name].append(result)
                print(f"round {rnd + 1}/{args.rounds}  guardrails c50  {name:12} {fmt(result)}", flush=True)
            paced = paced_turns(stream_gws, args.paced_duration, args.paced_chunks, rnd, rss.tick)
            for name in STREAM_SYSTEMS:
                paced_raw[name].append(paced[name])
                d = delay_stats(paced[name]["delays_ns"])
                print(f"round {rnd + 1}/{args.rounds}  paced stream   {name:12} {d['chunks']:5} chunks  "
                      f"p50 {d['p50_us']:8.1f} us  p99 {d['p99_us']:8.1f} us"
                      + (f"  ({paced[name]['redacted']} stamps redacted)" if paced[name]["redacted"] else "")
                      + (f"  PROBLEMS {paced[name]['problems'][0]}" if paced[name]["problems"] else ""), flush=True)
            for idx, scenario in enumerate(CACHE_SCENARIOS):
                for name in ordered(cache_systems, rnd + idx):
                    extra = redis_extra if name == "cache_redis" else None
                    result = load_phase(scenario, gateways[name], args, setup, loadgen, rss, f"round {rnd + 1}",
                                        extra)
                    cache_raw[scenario.key][name].append(result)
                    print(f"round {rnd + 1}/{args.rounds}  cache {scenario.key:8} {name:12} {fmt(result)}",
                          flush=True)
        problems = [p for r in paced_raw.values() for x in r for p in x["problems"]]
        if problems:
            raise BenchError(f"{len(problems)} paced streams not right, the first: {problems[0]}")
        for name, rounds in paced_raw.items():
            if not any(r["delays_ns"] for r in rounds):
                raise BenchError(f"paced streams through {name}: no chunk whose send time could be read")
        redis_keys = redis.count_keys() if "cache_redis" in gateways else 0
    finally:
        echo.close()
        deleted = redis.delete_keys()
    if "cache_redis" in gateways and not redis_keys:
        raise BenchError("cache_redis: no key under its prefix in Redis: the answers were not stored there")
    return {
        "machine": {"nproc": os.cpu_count(), "cpu_model": _cpu_model(), "kernel": platform.release(),
                    "python": platform.python_version(), "load_average_at_start": load_at_start,
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"quick": args.quick, "rounds": args.rounds, "duration_s": args.duration,
                     "warmup_s": args.warmup, "paced_duration_s": args.paced_duration,
                     "paced_chunks": args.paced_chunks, "paced_gap_ms": args.paced_gap_ms,
                     "loadgen": loadgen.name, "gateway_cpu": setup.gateway_cpu, "load_cpu": setup.load_cpu,
                     "prompt_bytes": len(BODY_PII), "pii_in_prompt": list(PII_VALUES)},
        "gateways": {n: {"config": GATEWAYS[n], "startup_ms": round(gw.startup_ms, 1),
                         "rss_idle_mb": round(rss_idle[n], 1), "rss_peak_mb": round(rss.peak_mb[n], 1)}
                     for n, gw in gateways.items()},
        "skipped": skipped,
        "checks": checks,
        "guardrails_load": summarize_load(load_raw),
        "guardrails_stream": summarize_stream(paced_raw, args),
        "cache": summarize_cache(cache_raw, cache_systems, redis, redis_keys, deleted),
        "pii_detector_cpu": detector_cpu(args.quick),
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def fmt(r: dict[str, Any]) -> str:
    return (f"{r['rps']:8,.0f} req/s  p50 {r['p50_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms  "
            f"cpu {r['server_cpu_us_per_req']:6.1f} us/req")


def vs(side: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Ratios of one side's medians to the baseline's, and the round-by-round req/s ratio (paired in time)."""
    return {
        "rps": _ratio(side["rps"], base["rps"]),
        "rps_per_round": [_ratio(a["rps"], b["rps"]) for a, b in zip(side["rounds"], base["rounds"], strict=True)],
        # req/s one whole core could sustain, relative: steadier than req/s on a shared host
        "per_core": _ratio(base["server_cpu_us_per_req"], side["server_cpu_us_per_req"]),
        "added_cpu_us_per_req": round(side["server_cpu_us_per_req"] - base["server_cpu_us_per_req"], 1),
        "p50_ms": _ratio(side["p50_ms"], base["p50_ms"]),
        "p99_ms": _ratio(side["p99_ms"], base["p99_ms"]),
    }


def summarize_load(raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    per = {n: summarize(raw[n]) for n in LOAD_SYSTEMS}
    return {"title": LOAD_SCENARIO.title, "concurrency": LOAD_SCENARIO.concurrency, **per,
            "pii/off": vs(per["pii"], per["off"])}


def summarize_stream(raw: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    routes = {}
    for name in STREAM_SYSTEMS:
        rounds = raw[name]
        pooled = [d for r in rounds for d in r["delays_ns"]]
        cpu = [c for r in rounds for c in r["cpu_ns"]]
        events = [e for r in rounds for e in r["text_events"]]
        chars = [c for r in rounds for c in r["chars"]]
        streams = sum(r["streams"] for r in rounds)
        routes[name] = {"config": GATEWAYS[name], "streams": streams, **delay_stats(pooled),
                        "chunks_expected": streams * args.paced_chunks,
                        "stamps_redacted": sum(r["redacted"] for r in rounds),
                        "gateway_cpu_us_per_stream": statistics.median(cpu) / 1000 if cpu else 0.0,
                        "text_events_per_stream": statistics.median(events) if events else 0,
                        "chars_per_chunk": round(statistics.fmean(chars) / args.paced_chunks, 1) if chars else 0.0,
                        "rounds": [{k: round(v, 1) for k, v in delay_stats(r["delays_ns"]).items()} for r in rounds]}
    diffs = {}
    for a, b, meaning in (("guard0", "off", "the guardrails' processing (pii + regex, no hold-back)"),
                          ("pii", "off", "the pii-redactor alone with a 64-character hold-back, all told"),
                          ("guard64", "off", "pii + regex with a 64-character hold-back, all told"),
                          ("guard64", "guard0", "the hold-back windows alone (a delay by design)")):
        diffs[f"{a}-{b}"] = {"meaning": meaning,
                             **{k: round(routes[a][k] - routes[b][k], 1) for k in ("p50_us", "p90_us", "p99_us",
                                                                                  "mean_us")},
                             "cpu_us_per_chunk": round((routes[a]["gateway_cpu_us_per_stream"]
                                                        - routes[b]["gateway_cpu_us_per_stream"]) / args.paced_chunks,
                                                       2)}
    return {"title": "paced stream, c=1, per-chunk delay (mock's send -> client's read)",
            "chunks_per_stream": args.paced_chunks, "gap_ms": args.paced_gap_ms, "routes": routes, "added": diffs}


def summarize_cache(raw: dict[str, dict[str, list[dict[str, Any]]]], systems: list[str], redis: RedisSide,
                    redis_keys: int, deleted: int) -> dict[str, Any]:
    scenarios = {}
    for scenario in CACHE_SCENARIOS:
        per = {n: summarize(raw[scenario.key][n]) for n in systems}
        scenarios[scenario.key] = {"title": scenario.title, "concurrency": scenario.concurrency, **per,
                                   **{f"{n}/off": vs(per[n], per["off"]) for n in systems[1:]}}
    return {"scenarios": scenarios, "systems": systems,
            "redis": {"key_prefix": redis.prefix, "keys_at_end": redis_keys, "keys_deleted": deleted,
                      "server_pid_read": redis.pid is not None} if "cache_redis" in systems else None}


# -- the table ---------------------------------------------------------------------------------------------------
def print_table(results: dict[str, Any]) -> None:
    m, s = results["machine"], results["settings"]
    print()
    print(f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}; load avg {m['load_average_at_start']}"
          f" at start, {m['load_average_at_end']} at end")
    print(f"run:     gateways on core {s['gateway_cpu']} (one process per config, alternating turns), mock + "
          f"{s['loadgen']} + driver on core {s['load_cpu']}; {s['rounds']} rounds x {s['duration_s']:g} s, medians")

    def row(label: str, values: list[str], width: int = 11) -> None:
        print(f"  {label:40}" + "".join(f"{v:>{width}}" for v in values))

    g = results["guardrails_load"]
    r = g["pii/off"]
    print(f"\n1. guardrails, non-stream, c=50, a {s['prompt_bytes']:,} B prompt with an email, a phone and a card")
    row("", ["off", "pii", "pii/off"])
    for label, key, f in (("req/s", "rps", "{:,.0f}"), ("gateway CPU per request (us)", "server_cpu_us_per_req",
                                                         "{:.1f}"),
                          ("latency p50 (ms)", "p50_ms", "{:.3f}"), ("latency p99 (ms)", "p99_ms", "{:.3f}")):
        ratio = r["per_core"] if key == "server_cpu_us_per_req" else r[key]
        row(label, [f.format(g["off"][key]), f.format(g["pii"][key]),
                    "-" if ratio is None else f"{ratio:.2f}x"])
    print(f"  {'':40}(CPU: off/pii, the per-core rate ratio; added {r['added_cpu_us_per_req']:+.1f} us per request)")
    print("  req/s pii/off round by round: " + ", ".join("-" if v is None else f"{v:.2f}" for v in r["rps_per_round"]))

    st = results["guardrails_stream"]
    rt, ad = st["routes"], st["added"]
    diffs = ("guard0-off", "pii-off", "guard64-guard0")
    print(f"\n2. guardrails on a paced stream, c=1, per-chunk delay in us ({st['chunks_per_stream']} chunks "
          f"{st['gap_ms']:g} ms apart, {rt['off']['chars_per_chunk']:g} characters each)")
    row("", ["off", "guard hb=0", "pii hb=64", "guard hb=64", "hb0-off", "pii64-off", "hb64-hb0"], 12)
    for label, key in (("delay p50", "p50_us"), ("delay p90", "p90_us"), ("delay p99", "p99_us"),
                       ("delay max", "max_us"), ("chunks delayed over 1 ms (%)", "over_1ms_pct")):
        row(label, [f"{rt[n][key]:,.1f}" for n in STREAM_SYSTEMS]
            + [f"{ad[d][key]:+,.1f}" if key in ad[d] else "" for d in diffs], 12)
    row("gateway CPU per stream (us)", [f"{rt[n]['gateway_cpu_us_per_stream']:,.0f}" for n in STREAM_SYSTEMS]
        + [f"{ad[d]['cpu_us_per_chunk']:+.1f}/ch" for d in diffs], 12)
    row("text events per stream (median)", [f"{rt[n]['text_events_per_stream']:g}" for n in STREAM_SYSTEMS], 12)
    row("chunks measured", [f"{rt[n]['chunks']:,}" for n in STREAM_SYSTEMS], 12)
    row("stamps redacted (not timed)", [f"{rt[n]['stamps_redacted']:,}" for n in STREAM_SYSTEMS], 12)
    print("  PIIDetector.find in-process (us, p50/p99): " + "; ".join(
        f"{x['label']}: {x['p50_us']:.1f}/{x['p99_us']:.1f}" for x in results["pii_detector_cpu"].values()))
    print("  hb0-off: the guardrails' own work per chunk (pii + regex scanning the answer, nothing held back);")
    print("  hb64-hb0: the hold-back window, a delay by design (text waits until 64 more characters came; the "
          "pattern guardrails share one window);")
    print("  CPU /ch: difference of gateway CPU per stream / chunks (it includes the guardrails' per-request work)")

    c = results["cache"]
    systems = c["systems"]
    print("\n3. response cache: the same non-stream request repeated, every answer a hit, vs off (every request to "
          "the mock)")
    row("", systems + [f"{n.removeprefix('cache_')}/off" for n in systems[1:]], 12)
    for sc in c["scenarios"].values():
        print(f"  {sc['title']}")
        for label, fig, f in (("latency p50 (ms)", "p50_ms", "{:.3f}"), ("latency p99 (ms)", "p99_ms", "{:.3f}"),
                              ("req/s", "rps", "{:,.0f}"), ("gateway CPU per request (us)", "server_cpu_us_per_req",
                                                            "{:.1f}")):
            ratios = [sc[f"{n}/off"]["per_core" if fig == "server_cpu_us_per_req" else fig] for n in systems[1:]]
            row("  " + label, [f.format(sc[n][fig]) for n in systems]
                + ["-" if v is None else f"{v:.2f}x" for v in ratios], 12)
        if "cache_redis" in systems and "redis_cpu_us_per_req" in sc["cache_redis"]:
            row("  redis-server CPU per request (us)", ["", "", f"{sc['cache_redis']['redis_cpu_us_per_req']:.1f}"], 12)
    for name, why in results["skipped"].items():
        print(f"  ({name} skipped: {why})")
    print("\nchecks: " + "; ".join(f"{x['system']}: {x['check']}" for x in results["checks"]) + ": all passed")
    print("  every PII request was redacted (gomodel_guardrail_decisions), every cached request a hit "
          "(gomodel_cache_lookups), no request failed; every paced stream complete and unaltered")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Guardrails and response cache vs the gateway without them "
                                                 "(see bench/README.md, 'Guardrails and cache').")
    parser.add_argument("--quick", action="store_true", help="1 round x 1 s: checks that the suite works")
    parser.add_argument("--rounds", type=int, help="alternating rounds, medians reported (default 5; --quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per load phase (default 5; --quick 1)")
    parser.add_argument("--paced-duration", type=float,
                        help="seconds of paced streams per gateway per round (default 5; --quick 1)")
    parser.add_argument("--paced-chunks", type=int, default=20, help="text chunks per paced stream (default 20)")
    parser.add_argument("--paced-gap-ms", type=float, default=5.0, help="pause before each paced chunk (default 5)")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--gateway-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0",
                        help="the Redis of cache_redis (skipped when unreachable)")
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "guardrails_cache.json")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    args.paced_duration = args.paced_duration or (1.0 if args.quick else 5.0)
    args.warmup = 0.3 if args.quick else 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    return run_suite_main(parse_args(argv), "gomodel-bench-gc-", run_suite, print_table)


if __name__ == "__main__":
    sys.exit(main())
