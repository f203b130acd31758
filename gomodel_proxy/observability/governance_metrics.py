"""Governance in ``/metrics``, read from its parts when scraped (nothing per request).

- ``gomodel_usage_records{state}``: usage records ``written`` to the database, ``spooled`` to the local
  file while it was down, ``replayed`` from it, ``rejected`` as invalid; ``gomodel_usage_pending`` waiting
  in memory; ``gomodel_usage_spooling`` 1 while the database is unreachable.
- ``gomodel_limiter_degraded``: requests answered by ``redis.on_failure`` because Redis was unreachable;
  ``gomodel_limiter_redis_up`` 0 while Redis is resting after a failure.
- ``gomodel_virtual_keys``: live virtual keys held in memory.
- ``gomodel_audit_entries{state}``: audit entries ``written`` to the sink, ``spilled`` to the local file while
  it was slow or down, ``replayed`` from it, ``dropped`` (a full queue; never silently); ``gomodel_audit_queue``
  finished requests waiting to become entries.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class GovernanceCollector(Collector):
    def __init__(self, governance: Any) -> None:
        self.governance = governance

    def collect(self) -> Iterator[Metric]:
        gov = self.governance
        writer = gov.writer
        if writer is not None:
            records = CounterMetricFamily("gomodel_usage_records", "Usage records by what became of them.",
                                          labels=["state"])
            for state in ("written", "spooled", "replayed", "rejected"):
                records.add_metric([state], float(getattr(writer, state, 0)))
            yield records
            yield GaugeMetricFamily("gomodel_usage_pending", "Usage records waiting in memory.",
                                    value=float(writer.pending))
            yield GaugeMetricFamily("gomodel_usage_spooling", "1 while usage records go to the spool file.",
                                    value=1.0 if writer.state == "spooling" else 0.0)
        guard = gov.guard
        if guard is not None:
            yield CounterMetricFamily("gomodel_limiter_degraded",
                                      "Requests answered by redis.on_failure while Redis was unreachable.",
                                      value=float(guard.degraded))
            yield GaugeMetricFamily("gomodel_limiter_redis_up", "0 while Redis is resting after a failure.",
                                    value=1.0 if guard.available else 0.0)
        stats = getattr(getattr(gov, "audit", None), "stats", None)
        if stats is not None:
            counts = stats()
            entries = CounterMetricFamily("gomodel_audit_entries", "Audit entries by what became of them.",
                                          labels=["state"])
            for state in ("written", "spilled", "replayed", "dropped"):
                entries.add_metric([state], float(counts.get(state, 0)))
            yield entries
            yield GaugeMetricFamily("gomodel_audit_queue", "Finished requests waiting to become audit entries.",
                                    value=float(counts.get("queued", 0)))
        keys = gov.keys
        if keys is not None:
            yield GaugeMetricFamily("gomodel_virtual_keys", "Live virtual keys held in memory.",
                                    value=float(keys.live_count))
