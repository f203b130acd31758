"""Smoke test of bench/run.py: a ``--quick`` run exits 0 and its JSON holds every system's figures.

It checks that the script works, not any speed: no figure is compared with a target here. The per-chunk
delay phase must have figures for each route, and every text chunk of every paced stream must have come
through, in order (the gateway's translated route included). A second, shorter run of ``--suite governance``
checks the governance comparison: every variant measured, none refused, usage records written.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ("direct", "relay", "gateway")
REQUESTS = {"non-stream", "stream", "stream+include_usage"}
PACED_ROUTES = ("direct", "relay", "native", "translated")
GOV_SYSTEMS = ("bare", "memory", "redis", "memory_norec")


def _loadgen_usable() -> bool:
    """wrk, or the Python fallback (aiohttp on uvloop, in this interpreter)."""
    return shutil.which("wrk") is not None or all(
        importlib.util.find_spec(name) is not None for name in ("aiohttp", "uvloop"))


@pytest.mark.skipif(not _loadgen_usable(), reason="neither wrk nor the Python load generator (aiohttp, uvloop)")
def test_quick_run_reports_all_three_systems(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "bench/run.py", "--quick", "--suite", "relay", "--output", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads(out.read_text())

    for key, scenario in results["scenarios"].items():
        for system in SYSTEMS:
            figures = scenario[system]
            assert figures["requests"] > 0, (key, system)
            assert figures["rps"] > 0, (key, system)
            assert figures["server_cpu_us_per_req"] >= 0, (key, system)
            if scenario["concurrency"] == 50:
                # thousands of requests even in a short phase; at c=1 a 0.3 s phase of a lightly loaded
                # process can fall under one clock tick (10 ms) of /proc CPU time and read 0
                assert figures["server_cpu_us_per_req"] > 0, (key, system)
        assert set(scenario["ratios"]) == {"gateway/relay", "gateway/direct"}, key
    for process in ("upstream", "relay", "gateway"):
        assert results["rss_mb"][f"{process}_idle"] > 0, process
        assert results["rss_mb"][f"{process}_peak"] > 0, process

    for system in ("gateway", "relay"):
        checks = [c for c in results["checks"] if c["system"] == system]
        assert {c["request"] for c in checks} == REQUESTS, system
        assert all(c["ok"] for c in checks), checks
    assert [t["kind"] for t in results["targets"]].count("relative") == 1

    per_chunk = results["per_chunk"]
    assert per_chunk["chunks_per_stream"] > 0
    for route in PACED_ROUTES:
        figures = per_chunk["routes"][route]
        assert figures["streams"] > 0, route
        # every chunk of every stream received, numbered 0..K-1 in order, as chat.completion.chunk events,
        # each stream ending with a finish_reason chunk and [DONE] (paced_delays in run.py lists what is not)
        assert figures["problems"] == [], (route, figures["problems"])
        assert figures["chunks"] == figures["chunks_expected"] == figures["streams"] * per_chunk["chunks_per_stream"]
        assert figures["complete"], route
        for key in ("p50_us", "p99_us", "max_us"):
            assert figures[key] > 0, (route, key)
        assert figures["p50_us"] <= figures["p99_us"] <= figures["max_us"], route
    for pair in ("translated-direct", "translated-native", "native-direct", "relay-direct"):
        assert {"p50_us", "p99_us", "max_us"} <= set(per_chunk["added"][pair]), pair
    translator = results["translator_cpu"]
    assert {"synthetic_text", "paced_text"} <= set(translator["rows"])
    for key, row in translator["rows"].items():
        assert row["samples"] > 0 and 0 < row["p50_us"] <= row["p99_us"], key
    target = next(t for t in results["targets"] if t["name"].startswith("added per-chunk latency p99"))
    assert target["value"] == round(per_chunk["added"]["translated-direct"]["p99_us"], 3)


@pytest.mark.skipif(not _loadgen_usable(), reason="neither wrk nor the Python load generator (aiohttp, uvloop)")
def test_quick_governance_run_compares_with_the_bare_gateway(tmp_path: Path) -> None:
    out = tmp_path / "g.json"
    proc = subprocess.run([sys.executable, "bench/run.py", "--quick", "--suite", "governance", "--duration", "0.2",
                           "--output", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads(out.read_text())
    assert "scenarios" not in results  # the relay suite did not run
    gov = results["governance"]
    systems = list(gov["systems"])
    # (c) needs a Redis server; the others always run
    assert {"bare", "memory", "memory_norec"} <= set(systems) <= set(GOV_SYSTEMS)
    assert ("redis" in systems) != bool(gov["skipped"])
    for key in ("c50", "c50_stream"):
        scenario = gov["scenarios"][key]
        for system in systems:
            figures = scenario[system]
            assert figures["requests"] > 0 and figures["rps"] > 0, (key, system)
            assert figures["server_cpu_us_per_req"] > 0, (key, system)
            assert figures["errors"] == 0, (key, system)  # the run stops on any refusal, this only restates it
        assert set(scenario["vs_bare"]) == set(systems) - {"bare"}, key
        for ratio in scenario["vs_bare"].values():
            assert ratio["rps"] > 0 and ratio["per_core"] > 0, key
    assert all(c["ok"] for c in gov["checks"]), gov["checks"]
    assert [t["system"] for t in gov["targets"]] == systems[1:]
    records = gov["usage_records"]
    assert set(records) == {"memory", "redis"} & set(systems)  # (a) and (d) write none
    for system, rec in records.items():
        assert rec["rows"] >= rec["requests_answered_in_phases"] > 0, system
        assert rec["cost_usd"] > 0, system  # the bench model is priced: budgets settle real amounts
    if "redis" in systems:
        assert gov["redis"]["keys_at_end"] > 0
