"""What the audit trail costs: non-streamed chat at c=50 through a gateway with ``features.audit_logging: true,
audit.backend: file`` against the same gateway without audit, in one run.

Both gateways are processes of the same build differing only by their config (run.py's bare governance config:
no master key, no usage records), pinned to the same core (``taskset -c 0``; only the one under load is busy)
and measured in alternating turns (the order reversing every round); medians over rounds, and the ratio
audit/off of requests per second. The mock upstream, wrk and this driver share core 1, as in bench/run.py,
whose helpers this uses (processes, wrk, ``/proc``).

Correctness, checked after the timing: the audit file must hold one ``request`` entry per request answered
by the audit gateway (the load generator's count, warm-up and checks included, is a lower bound), none dropped.

Usage (from the repository root)::

    .venv/bin/python bench/audit_bench.py            # 5 rounds x 5 s, about a minute
    .venv/bin/python bench/audit_bench.py --quick    # 1 round x 1 s: checks that it works

Results: a table on stdout and ``bench/results/audit.json`` (bench/README.md, "Audit").
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from guardrails_cache import fmt, ordered, post
from run import (
    BENCH,
    SCENARIOS,
    BenchError,
    RssPeak,
    Setup,
    Target,
    _ratio,
    governance_config,
    measure,
    pick_loadgen,
    run_suite_main,
    start_gateway,
    start_upstream,
    tail,
)

SCENARIO = next(s for s in SCENARIOS if s.key == "c50")
SYSTEMS = ("off", "file")


def audit_config(setup: Setup, upstream_port: int, name: str) -> Path:
    path, _ = governance_config(setup, upstream_port, f"audit-{name}", master=False, usage=False)
    if name == "file":
        text = path.read_text()
        audit_file = setup.workdir / "audit.jsonl"
        # run.py's config may already have a features section: add the switch to it, or a section of its own.
        if "features:\n" in text:
            text = text.replace("features:\n", "features:\n  audit_logging: true\n", 1)
        else:
            text += "features:\n  audit_logging: true\n"
        text += f"audit:\n  backend: file\n  path: {audit_file}\n"
        path.write_text(text)
    return path


def request_entries(path: Path) -> int:
    """Request entries in the audit file and its rotated files (``audit.<time>.jsonl``, at 100 MB)."""
    files = [path, *path.parent.glob(f"{path.stem}.*{path.suffix}")]
    return sum(1 for f in files if f.exists() for line in f.read_bytes().splitlines() if b'"kind":"request"' in line)


def run_suite(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    loadgen = pick_loadgen(args.loadgen, setup.children, setup.workdir)
    setup.upstream = upstream = start_upstream(setup, 20, 5.0)
    gateways: dict[str, tuple[Target, Path]] = {}
    procs: dict[str, Any] = {}
    for name in SYSTEMS:
        config = audit_config(setup, upstream.port, name)
        log_name = f"gateway-{name}.log"
        proc, target, ms = start_gateway(setup, config, log_name, name=name)
        gateways[name], procs[name] = (target, setup.workdir / log_name), proc
        print(f"gateway {name:5} ready in {ms:4.0f} ms, port {target.port}", flush=True)
    for name, (target, _) in gateways.items():
        reply = post(target.port, SCENARIO.body)
        if reply.status != 200:
            raise BenchError(f"{name}: a chat request answered {reply.status}: {reply.body[:300]!r}")
    rss = RssPeak({n: t.pid for n, (t, _) in gateways.items()} | {"upstream": upstream.pid})
    raw: dict[str, list[dict[str, Any]]] = {n: [] for n in SYSTEMS}
    answered = {n: 1 for n in SYSTEMS}

    def phase(name: str, duration: float, label: str) -> dict[str, Any]:
        target, log = gateways[name]
        result = measure(SCENARIO, target, duration, loadgen, rss, setup.load_cpu)
        if result["errors"] or not result["requests"]:
            raise BenchError(f"{name}, {label}: {result['errors']} of {result['requests']} requests failed; "
                             f"gateway log:\n{tail(log)}")
        answered[name] += result["requests"]
        return result

    for name in SYSTEMS:
        phase(name, args.warmup, "warm-up")
    for rnd in range(args.rounds):
        for name in ordered(list(SYSTEMS), rnd):
            result = phase(name, args.duration, f"round {rnd + 1}")
            raw[name].append(result)
            print(f"round {rnd + 1}/{args.rounds}  c50  {name:5} {fmt(result)}", flush=True)
    # Stop the audit gateway (SIGTERM drains its queue) and count the entries.
    proc = procs["file"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    entries = request_entries(setup.workdir / "audit.jsonl")
    if entries < answered["file"]:
        raise BenchError(f"the audit file holds {entries} request entries for at least {answered['file']} "
                         f"requests answered:\n{tail(gateways['file'][1])}")
    medians = {n: statistics.median(r["rps"] for r in raw[n]) for n in SYSTEMS}
    return {
        "scenario": SCENARIO.key, "rounds": args.rounds, "duration_s": args.duration, "loadgen": loadgen.name,
        "rps_median": medians, "ratio_file_vs_off": _ratio(medians["file"], medians["off"]),
        "p50_ms_median": {n: statistics.median(r["p50_ms"] for r in raw[n]) for n in SYSTEMS},
        "p99_ms_median": {n: statistics.median(r["p99_ms"] for r in raw[n]) for n in SYSTEMS},
        "audit_entries": entries, "audit_requests_at_least": answered["file"], "raw": raw,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
    }


def print_table(results: dict[str, Any]) -> None:
    rps, p50, p99 = results["rps_median"], results["p50_ms_median"], results["p99_ms_median"]
    print(f"\nAudit (file) vs off, non-stream c=50, medians of {results['rounds']} rounds "
          f"x {results['duration_s']:g} s")
    print(f"{'gateway':8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name in SYSTEMS:
        print(f"{name:8} {rps[name]:10.0f} {p50[name]:8.2f} {p99[name]:8.2f}")
    ratio = results["ratio_file_vs_off"]
    print(f"ratio file/off: {ratio:.3f}" if ratio is not None else "ratio file/off: n/a")
    print(f"audit entries: {results['audit_entries']} (requests answered: >= {results['audit_requests_at_least']})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The file audit trail vs no audit (bench/README.md, 'Audit').")
    parser.add_argument("--quick", action="store_true", help="1 round x 1 s: checks that the suite works")
    parser.add_argument("--rounds", type=int, help="alternating rounds, medians reported (default 5; --quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per load phase (default 5; --quick 1)")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--gateway-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "audit.json")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    args.warmup = 0.3 if args.quick else 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    return run_suite_main(parse_args(argv), "gomodel-bench-audit-", run_suite, print_table)


if __name__ == "__main__":
    sys.exit(main())
