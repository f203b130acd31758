"""Smoke test of bench/guardrails_cache.py: a ``--quick`` run exits 0 and its JSON holds every figure.

It checks that the suite works, not any speed: no figure is compared with another or with a target. The
suite itself stops (exit 1) when an answer is wrong: PII reaching the provider, a cache repeat that is not a
HIT, a failed request, a paced stream lost or altered; this test restates what the JSON says about that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.test_bench_smoke import _loadgen_usable

ROOT = Path(__file__).resolve().parents[2]
STREAM_ROUTES = ("off", "guard0", "pii", "guard64")
STREAM_DIFFS = ("guard0-off", "pii-off", "guard64-off", "guard64-guard0")


def _figures(side: dict[str, object], *keys: str) -> None:
    for key in keys:
        value = side[key]
        assert isinstance(value, int | float) and value > 0, (key, value)


@pytest.mark.skipif(not _loadgen_usable(), reason="neither wrk nor the Python load generator (aiohttp, uvloop)")
def test_quick_run_reports_guardrails_and_cache(tmp_path: Path) -> None:
    out = tmp_path / "gc.json"
    proc = subprocess.run([sys.executable, "bench/guardrails_cache.py", "--quick", "--output", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=55, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads(out.read_text())
    assert results["settings"]["quick"] is True

    checks = results["checks"]
    assert checks and all(c["ok"] for c in checks), checks
    checked = {c["system"] for c in checks}
    assert {"off", "pii", "guard64", "guard0", "cache_local"} <= checked

    load = results["guardrails_load"]
    for side in ("off", "pii"):
        _figures(load[side], "requests", "rps", "p50_ms", "p99_ms", "server_cpu_us_per_req")
        assert load[side]["errors"] == 0, side
    # the suite stops unless every PII request was redacted; the count is kept per phase
    assert load["pii"]["input_redactions"] >= load["pii"]["requests"]
    ratio = load["pii/off"]
    assert ratio["rps"] > 0 and ratio["per_core"] > 0 and len(ratio["rps_per_round"]) == 1

    stream = results["guardrails_stream"]
    for route in STREAM_ROUTES:
        figures = stream["routes"][route]
        assert figures["streams"] > 0, route
        assert figures["chunks_expected"] == figures["streams"] * stream["chunks_per_stream"], route
        # every chunk came, in order; a send time the PII guardrail took for a phone number is not timed
        assert figures["chunks"] + figures["stamps_redacted"] == figures["chunks_expected"], route
        if route == "off":
            assert figures["stamps_redacted"] == 0
        _figures(figures, "p50_us", "p99_us", "max_us", "chars_per_chunk", "text_events_per_stream")
        assert figures["p50_us"] <= figures["p99_us"] <= figures["max_us"], route
    for diff in STREAM_DIFFS:
        assert {"p50_us", "p99_us", "cpu_us_per_chunk"} <= set(stream["added"][diff]), diff

    detector = results["pii_detector_cpu"]
    assert set(detector) == {"prompt", "stamp_window", "prose_window"}
    assert detector["prompt"]["findings"] == 3  # the email, the phone number and the card number
    for row in detector.values():
        assert row["samples"] > 0 and 0 < row["p50_us"] <= row["p99_us"], row

    cache = results["cache"]
    systems = cache["systems"]
    assert systems[:2] == ["off", "cache_local"]
    assert ("cache_redis" in systems) != ("cache_redis" in results["skipped"])
    for key in ("c1", "c50"):
        scenario = cache["scenarios"][key]
        for system in systems:
            _figures(scenario[system], "requests", "rps", "p50_ms", "p99_ms")
            assert scenario[system]["errors"] == 0, (key, system)
        for system in systems[1:]:
            # the suite stops unless every request of a cached phase was a hit; the counts are kept
            assert scenario[system]["cache_hits"] >= scenario[system]["requests"], (key, system)
            assert scenario[system]["cache_misses"] == 0, (key, system)
            assert scenario[f"{system}/off"]["rps"] > 0, (key, system)
    if "cache_redis" in systems:
        assert cache["redis"]["keys_at_end"] > 0
