"""Smoke test of bench/audit_bench.py: a ``--quick`` run exits 0 and its JSON holds every figure.

It checks that the suite works, not any speed. The suite itself stops (exit 1) when the audit file holds fewer
request entries than requests answered; this test restates that from the JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.test_bench_smoke import _loadgen_usable

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not _loadgen_usable(), reason="neither wrk nor the Python load generator (aiohttp, uvloop)")
def test_quick_run_reports_the_audit_cost_and_keeps_every_entry(tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    proc = subprocess.run([sys.executable, "bench/audit_bench.py", "--quick", "--output", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=55, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads(out.read_text())
    assert results["rounds"] == 1 and results["scenario"] == "c50"
    for side in ("off", "file"):
        assert results["rps_median"][side] > 0 and results["p99_ms_median"][side] > 0, side
    assert 0 < results["ratio_file_vs_off"] < 10
    assert results["audit_entries"] >= results["audit_requests_at_least"] > 0
