"""The end of every request: one access line, the metrics, and the record kept for usage accounting."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from gomodel_proxy.core.types import CallRecord
from gomodel_proxy.llmclient.keyring import charge_usage
from gomodel_proxy.observability.metrics import Metrics


class RequestRecorder:
    """A ``UsageSink`` that logs, counts and keeps the latest records (the usage store reads them later)."""

    def __init__(self, metrics: Metrics, logger: Any, *, access_log: bool = True, keep: int = 10_000) -> None:
        self.metrics = metrics
        self.logger = logger
        #: Off when the log level hides info lines: then the line's fields are not even computed.
        self.access_log = access_log
        self.recent: deque[CallRecord] = deque(maxlen=keep)
        #: Where each call's usage record goes (the governance's writer); ``None``: nowhere.
        self.usage_sink: Callable[[CallRecord], None] | None = None
        #: Where each call goes for the audit trail (``AuditLogger.log_request``: only queued); ``None``: nowhere.
        self.audit_sink: Callable[[CallRecord], None] | None = None
        #: ``observability.tracing.Tracing`` when tracing is on (``None``: off, and nothing is done).
        self.tracer: Any = None
        #: ``observability.dogstatsd.DogStatsD`` when DogStatsD is on.
        self.dogstatsd: Any = None
        #: ``observability.live.LiveFeed.publish`` while someone follows the live requests; ``None``: nobody.
        self.live: Callable[[CallRecord], None] | None = None

    def record(self, call: CallRecord) -> None:
        self.recent.append(call)
        self.metrics.observe(call)
        if self.usage_sink is not None:
            try:
                self.usage_sink(call)
            except Exception:  # a record that cannot be built must not fail the request's end
                self.logger.exception("usage record failed", request_id=call.request_id)
        if self.audit_sink is not None:
            self.audit_sink(call)  # appends to a bounded queue: it cannot fail nor wait
        if call.cost:  # priced (by the usage record above or the budget step): the cost counter
            self.metrics.observe_cost(call)
        if self.tracer is not None or self.dogstatsd is not None:
            self._export(call)
        usage = call.usage
        if usage is not None:
            charge_usage(usage.input_tokens + usage.output_tokens)  # the key's TPM budget, if it has one
        if self.live is not None:  # the only cost while nobody listens
            try:
                self.live(call)
            except Exception:  # a listener's event must not fail the request's end
                self.logger.exception("live request event failed", request_id=call.request_id)
        if not self.access_log:
            return
        usage = call.usage
        ttfb = call.ttfb_s
        self.logger.info(
            "request",
            request_id=call.request_id,
            endpoint=call.endpoint,
            model=call.model_requested or None,
            provider=call.provider or None,
            status=call.status,
            outcome=call.outcome,
            stream=call.stream,
            latency_ms=round(call.latency_s * 1000, 3),
            ttfb_ms=round(ttfb * 1000, 3) if ttfb is not None else None,
            overhead_ms=round(call.overhead_s * 1000, 3),
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            usage_estimated=usage.estimated if usage else None,
        )

    def _export(self, call: CallRecord) -> None:
        """Spans and DogStatsD metrics of the call (neither may fail the request's end)."""
        for exporter in (self.tracer, self.dogstatsd):
            if exporter is None:
                continue
            try:
                exporter.record(call)
            except Exception:
                self.logger.exception("telemetry export failed", request_id=call.request_id)
