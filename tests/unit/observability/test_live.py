"""The live feed of finished requests: the recorder's hook only while someone listens, bounded queues that
drop the oldest with a notice, the listener limit, shutdown, what an event holds (never a prompt or key), and
the operators' own calls (the admin API, the dashboard) only for the listeners that ask for them."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest

from gomodel_proxy.core.errors import GatewayError
from gomodel_proxy.core.types import CallRecord, Principal, Usage
from gomodel_proxy.observability import live
from gomodel_proxy.observability.live import LiveFeed, TooManyListeners
from gomodel_proxy.observability.metrics import Metrics
from gomodel_proxy.observability.recorder import RequestRecorder


class _Log:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def exception(self, event: str, **_: Any) -> None:
        self.errors.append(event)

    def info(self, *_: Any, **__: Any) -> None:
        pass


def _recorder() -> RequestRecorder:
    return RequestRecorder(Metrics(), _Log(), access_log=False)


def _feed(recorder: RequestRecorder, **kw: Any) -> LiveFeed:
    def attach(hook: Any) -> None:
        recorder.live = hook

    return LiveFeed(attach, **kw)


def _call(n: int = 1, **kw: Any) -> CallRecord:
    call = CallRecord(request_id=f"req-{n}", endpoint="chat_completions", model_requested="mock/m", provider="mock",
                      model="m", status=200, usage=Usage(12, 34), billable=True, **kw)
    call.first_byte_at = call.started + 0.010
    call.finished = call.started + 0.250
    return call


def _events(chunks: list[bytes]) -> list[tuple[str, Any]]:
    out = []
    for raw in b"".join(chunks).split(b"\n\n"):
        if not raw:
            continue
        lines = dict(line.split(b": ", 1) for line in raw.split(b"\n"))
        out.append((lines[b"event"].decode(), json.loads(lines[b"data"])))
    return out


def test_the_hook_is_set_only_while_someone_listens() -> None:
    recorder = _recorder()
    feed = _feed(recorder)
    assert recorder.live is None
    recorder.record(_call(1))  # nobody listens: nothing built
    a = feed.subscribe()
    b = feed.subscribe()
    assert recorder.live == feed.publish
    recorder.record(_call(2))
    feed.unsubscribe(a)
    assert recorder.live is not None  # b still listens
    feed.unsubscribe(b)
    assert recorder.live is None
    assert [e["request_id"] for _, e in _events(b.take())] == ["req-2"]


def test_an_event_holds_the_calls_figures_and_nothing_of_its_content() -> None:
    recorder = _recorder()
    feed = _feed(recorder)
    sub = feed.subscribe()
    call = _call(7, principal=Principal(kind="key", key_id="k_1", user_id="alice", team_id="research"),
                 cost=Decimal("0.084000000"), stream=True)
    call.notes = {"guardrails": "the prompt text: tell me a secret"}
    before = time.time()
    recorder.record(call)
    [(name, event)] = _events(sub.take())
    assert name == "request"
    assert set(event) >= {"request_id", "time", "endpoint", "model", "provider", "status", "outcome", "stream",
                          "latency_ms", "ttfb_ms", "input_tokens", "output_tokens", "cost_usd", "key_id",
                          "user_id", "team_id"}
    assert (event["request_id"], event["model"], event["provider"], event["status"]) == ("req-7", "mock/m", "mock", 200)
    assert (event["input_tokens"], event["output_tokens"], event["cost_usd"]) == (12, 34, "0.084")
    assert (event["key_id"], event["user_id"], event["team_id"], event["stream"]) == ("k_1", "alice", "research", True)
    assert event["latency_ms"] == pytest.approx(250, abs=0.01) and event["ttfb_ms"] == pytest.approx(10, abs=0.01)
    assert event["time"].endswith("Z") and len(event["time"]) == len("2026-01-01T00:00:00.000Z")
    # The call finished 0.24 s after its start; it is dated on the wall clock within a second of now.
    stamp = time.mktime(time.strptime(event["time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert before - 2 <= stamp <= time.time() + 1
    assert "secret" not in json.dumps(event)


def test_a_slow_listener_loses_the_oldest_and_is_told_how_many() -> None:
    recorder = _recorder()
    feed = _feed(recorder, queue_size=5)
    slow = feed.subscribe()
    fast = feed.subscribe()
    for n in range(3):
        recorder.record(_call(n))
    assert [name for name, _ in _events(fast.take())] == ["request"] * 3  # read in time: nothing lost
    for n in range(3, 12):
        recorder.record(_call(n))
    events = _events(slow.take())
    assert events[0] == ("dropped", {"count": 7})  # 12 published, 5 kept
    assert [e["request_id"] for _, e in events[1:]] == [f"req-{n}" for n in range(7, 12)]
    assert feed.dropped_total == 7 + 4  # the other listener, not reading meanwhile, lost 4 of its 9
    # The notice is given once; the next take starts clean.
    recorder.record(_call(12))
    assert [name for name, _ in _events(slow.take())] == ["request"]


def test_publishing_never_waits_and_costs_one_encoding_per_call() -> None:
    recorder = _recorder()
    feed = _feed(recorder, queue_size=1000)
    subs = [feed.subscribe() for _ in range(32)]
    started = time.perf_counter()
    for n in range(2000):
        recorder.record(_call(n))
    elapsed = time.perf_counter() - started
    assert all(len(s.queue) == 1000 and s.dropped == 1000 for s in subs)
    assert subs[0].queue[0] is subs[31].queue[0]  # the same bytes object: encoded once
    assert elapsed < 5.0


def test_the_33rd_listener_is_refused_with_503() -> None:
    feed = _feed(_recorder())
    subs = [feed.subscribe() for _ in range(live.MAX_SUBSCRIBERS)]
    with pytest.raises(TooManyListeners) as refused:
        feed.subscribe()
    assert refused.value.status == 503 and refused.value.code == "too_many_listeners"
    assert refused.value.to_dict()["error"]["type"] == "server_error"  # type: ignore[index]
    feed.unsubscribe(subs[0])
    feed.subscribe()  # a place freed is a place taken


async def test_close_ends_every_listener_and_refuses_new_ones() -> None:
    recorder = _recorder()
    feed = _feed(recorder)
    sub = feed.subscribe()
    feed.close()
    assert sub.closed and sub.wake.is_set()
    with pytest.raises(GatewayError) as refused:
        feed.subscribe()
    assert refused.value.status == 503


def test_a_failing_hook_does_not_fail_the_requests_end() -> None:
    recorder = _recorder()

    def boom(_: CallRecord) -> None:
        raise RuntimeError("listener broke")

    recorder.live = boom
    recorder.record(_call(1))
    assert list(recorder.recent)[-1].request_id == "req-1"
    assert recorder.logger.errors == ["live request event failed"]


def test_backlog_is_the_latest_records_oldest_first() -> None:
    recorder = _recorder()
    feed = _feed(recorder)
    for n in range(10):
        recorder.record(_call(n))
    ids = [e["request_id"] for _, e in _events(feed.backlog(recorder.recent, 3))]
    assert ids == ["req-7", "req-8", "req-9"]
    assert feed.backlog(recorder.recent, 0) == []
    assert len(feed.backlog(recorder.recent, 500)) == 10


def _with_endpoint(endpoint: str, n: int = 1) -> CallRecord:
    call = _call(n)
    call.endpoint = endpoint
    return call


@pytest.mark.parametrize(("endpoint", "operator"), [
    ("admin GET /admin/keys/{key_id}", True),
    ("admin POST /admin/keys", True),
    ("admin", True),
    ("dashboard", True),
    ("chat.completions", False),
    ("other", False),
    ("passthrough", False),
    ("", False),
])
def test_is_operator_call(endpoint: str, operator: bool) -> None:
    assert live.is_operator_call(_with_endpoint(endpoint)) is operator


def test_an_operator_call_reaches_only_the_listeners_that_asked_for_them() -> None:
    recorder = _recorder()
    feed = _feed(recorder)
    clients_only = feed.subscribe()
    everything = feed.subscribe(admin=True)
    recorder.record(_with_endpoint("admin GET /admin/keys", 1))
    recorder.record(_with_endpoint("dashboard", 2))
    recorder.record(_with_endpoint("chat.completions", 3))
    assert [e["request_id"] for _, e in _events(clients_only.take())] == ["req-3"]
    assert [e["request_id"] for _, e in _events(everything.take())] == ["req-1", "req-2", "req-3"]
    # Left out is not lost: the one without them is told of no drop.
    assert clients_only.dropped == 0 and feed.dropped_total == 0


def test_the_backlog_leaves_operator_calls_out_unless_asked() -> None:
    recorder = _recorder()
    feed = _feed(recorder)
    for n, endpoint in enumerate(("chat.completions", "admin GET /admin/keys", "dashboard", "embeddings")):
        recorder.record(_with_endpoint(endpoint, n))
    ids = [e["request_id"] for _, e in _events(feed.backlog(recorder.recent, 10))]
    assert ids == ["req-0", "req-3"]
    ids = [e["request_id"] for _, e in _events(feed.backlog(recorder.recent, 10, admin=True))]
    assert ids == ["req-0", "req-1", "req-2", "req-3"]
    # The count is of what is sent: the last two the listener would see.
    ids = [e["request_id"] for _, e in _events(feed.backlog(recorder.recent, 2))]
    assert ids == ["req-0", "req-3"]
