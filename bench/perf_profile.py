"""Where a perf.py gateway spends its time: py-spy samples of ``gateway-bare`` or ``gateway-prod`` under wrk.

The same mock, configs and pinning as bench/perf.py (gateway on core 0; mock, wrk and py-spy on core 1); the
summary (self and inclusive shares per function, self share per library) is printed and the raw samples kept
for a flame graph (``py-spy``'s raw format, which speedscope and flamegraph.pl read).

Usage (from the repository root)::

    .venv/bin/python bench/perf_profile.py prod --concurrency 32 --duration 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf import (
    BODY_PLAIN,
    CHAT,
    PG_URL,
    Prod,
    gateway_config,
    spawn_gateway,
    start_mock,
)
from perf_load import Load
from run import (
    Setup,
    claim_cores,
    collapsed_summary,
    create_virtual_key,
    find_py_spy,
    run_with_children,
)

#: ``--without``: how each part of the production chain is turned off in perf.py's config.
WITHOUT = {
    "rate_limiting": ("features:\n", "features:\n  rate_limiting: false\n"),
    "budgets": ("features:\n", "features:\n  budgets: false\n"),
    "usage": ("usage_tracking: true", "usage_tracking: false"),
    "audit": ("audit_logging: true", "audit_logging: false"),
    "guardrails": ("features:\n", "features:\n  guardrails: false\n"),
}


def suite(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    py_spy = find_py_spy()
    if py_spy is None:
        raise SystemExit("perf_profile: py-spy not found; `.venv/bin/pip install py-spy`")
    mock = start_mock(setup, 20, 20.0)
    prod = Prod(args.redis_url, args.pg_url) if args.system == "prod" else None
    if prod is not None and prod.problem:
        raise SystemExit(f"perf_profile: {prod.problem}")
    try:
        name = f"gateway-{args.system}"
        config = gateway_config(setup, mock.port, name, prod)
        text = config.read_text()
        for feature in args.without:  # the production chain less some of its parts
            old, new = WITHOUT[feature]
            text = text.replace(old, new, 1)
        config.write_text(text)
        gateway, _ = spawn_gateway(setup, config, name)
        if prod is not None:
            gateway.key = create_virtual_key(gateway.port)
        load = Load(setup)
        load.wrk(gateway, CHAT, BODY_PLAIN, args.concurrency, 1.0, lambda: None, mock.pid)  # warm-up
        out = args.output
        out.parent.mkdir(parents=True, exist_ok=True)
        spy = setup.children.spawn(
            [py_spy, "record", "--pid", str(gateway.pid), "--rate", str(args.rate), "--duration",
             str(int(args.duration)), "--format", "raw", "--nonblocking", "--output", str(out)],
            cpu=setup.load_cpu)
        time.sleep(0.3)
        result = load.wrk(gateway, CHAT, BODY_PLAIN, args.concurrency, args.duration, lambda: None, mock.pid)
        spy.wait(timeout=args.duration + 30)
        summary = collapsed_summary(out, top=args.top)
        return {"load": {k: result.get(k) for k in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_req")},
                "profile": summary, "file": str(out)}
    finally:
        if prod is not None:
            prod.clean()


def main() -> int:
    p = argparse.ArgumentParser(description="py-spy profile of a perf.py gateway under wrk")
    p.add_argument("system", choices=("bare", "prod"))
    p.add_argument("--without", action="append", default=[], choices=sorted(WITHOUT),
                   help="prod: turn this part of the chain off (repeatable)")
    p.add_argument("--concurrency", "-c", type=int, default=32)
    p.add_argument("--duration", "-d", type=float, default=8.0)
    p.add_argument("--rate", type=int, default=400, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--output", type=Path, default=Path("bench/results/profile.txt"))
    p.add_argument("--gateway-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--pg-url", default=PG_URL)
    args = p.parse_args()
    refused = claim_cores(args)
    if refused is not None:
        return refused
    got = run_with_children(args, "gomodel-profile-", suite)
    if isinstance(got, int):
        return got
    print(f"load: {got['load']}")
    prof = got["profile"]
    for section, rows in prof.items():
        if isinstance(rows, list):
            print(f"\n{section}:")
            for row in rows:
                print(f"  {row}")
        else:
            print(f"{section}: {rows}")
    print(f"\nraw samples: {got['file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
