"""The ``datadog`` audit sink against a fake Datadog Logs intake.

No Datadog endpoint is reached: ``FakeIntake`` is an aiohttp server on a loopback port implementing
``POST /api/v2/logs`` as Datadog documents it (https://docs.datadoghq.com/api/latest/logs/#send-logs): the
``DD-API-KEY`` header (``403`` otherwise), a JSON array of log objects, optionally gzip-compressed
(``Content-Encoding: gzip``), at most 1000 logs and 5 MB uncompressed (``413`` otherwise), answered with
``202 {}``; errors as ``{"errors": [...]}``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from gomodel_proxy.audit.datadog_sink import (
    DEFAULT_INTAKE,
    MAX_LOGS_PER_REQUEST,
    MAX_REQUEST_BYTES,
    DatadogAuditSink,
    DatadogSinkError,
)
from gomodel_proxy.audit.sink import AuditSink
from gomodel_proxy.config.schema import AuditConfig

API_KEY = "0123456789abcdef0123456789abcdef"


class FakeIntake:
    def __init__(self, path: str = "/api/v2/logs") -> None:
        self.path = path
        self.requests: list[web.Request] = []
        self.batches: list[list[dict[str, Any]]] = []
        #: A status to answer instead of 202 (with ``{"errors": [...]}``), or "hang".
        self.fail: int | str | None = None
        #: Put the received key in error bodies (a misbehaving proxy): the sink must still not show it.
        self.echo_key = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_post(self.path, self.logs)
        return app

    @staticmethod
    def _error(status: int, *errors: str) -> web.Response:
        return web.json_response({"errors": list(errors)}, status=status)

    async def logs(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        key = request.headers.get("DD-API-KEY", "")
        if key != API_KEY:
            return self._error(403, f"Forbidden: {key}" if self.echo_key else "Forbidden")
        if self.fail == "hang":
            await asyncio.Event().wait()
        if isinstance(self.fail, int):
            return self._error(self.fail, f"intake error, key {key}" if self.echo_key else "intake error")
        if request.content_type != "application/json":
            return self._error(400, "Bad Request: unsupported content type")
        # aiohttp's server inflates a ``Content-Encoding: gzip`` body itself (and answers 400 to a body that
        # is not gzip): ``raw`` is the uncompressed JSON, the size Datadog's 5 MB limit is about.
        try:
            raw = await request.read()
        except Exception:  # aiohttp's RequestPayloadError (a ContentEncodingError)
            return self._error(400, "Bad Request: malformed gzip body")
        if len(raw) > MAX_REQUEST_BYTES:
            return self._error(413, "Request Entity Too Large")
        logs = orjson.loads(raw)
        if not isinstance(logs, list) or not all(isinstance(log, dict) for log in logs):
            return self._error(400, "Bad Request")
        if len(logs) > MAX_LOGS_PER_REQUEST:
            return self._error(413, "Request Entity Too Large: too many logs")
        self.batches.append(logs)
        return web.json_response({}, status=202)

    @property
    def logs_received(self) -> list[dict[str, Any]]:
        return [log for batch in self.batches for log in batch]


MakeFake = Callable[..., Awaitable[tuple[FakeIntake, str]]]


@pytest.fixture
def make_fake(aiohttp_server: Any) -> MakeFake:
    async def make(**kwargs: Any) -> tuple[FakeIntake, str]:
        fake = FakeIntake(**kwargs)
        server = await aiohttp_server(fake.app())
        return fake, f"http://127.0.0.1:{server.port}"

    return make


def entry(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"e-{i}", "request_id": f"req-{i}", "step": "guardrails", "decision": "allow", "latency_ms": i,
            "meta": {"model": "up/gpt"}} | extra


def sink_for(url: str, **kwargs: Any) -> DatadogAuditSink:
    return DatadogAuditSink(api_key=API_KEY, url=url, index="gomodel-audit", hostname="gw-1", **kwargs)


async def write(sink: DatadogAuditSink, entries: list[dict[str, Any]]) -> None:
    try:
        await sink.write(entries)
    finally:
        await sink.close()


async def test_batch_is_sent_as_logs(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    sink = sink_for(url)
    as_protocol: AuditSink = sink
    assert as_protocol.name == "datadog"
    await sink.start()
    await write(sink, [entry(1), entry(2)])
    (request,) = fake.requests
    assert request.path == "/api/v2/logs"
    assert request.headers["DD-API-KEY"] == API_KEY
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Content-Encoding"] == "gzip"
    first, second = fake.batches[0]
    assert first == entry(1) | {"ddsource": "gomodel-proxy", "service": "gomodel-audit", "hostname": "gw-1",
                                "message": orjson.dumps(entry(1)).decode()}
    assert orjson.loads(second["message"]) == entry(2)


async def test_uncompressed(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    await write(sink_for(url, compress=False), [entry(1)])
    assert "Content-Encoding" not in fake.requests[0].headers
    assert fake.logs_received[0]["id"] == "e-1"


async def test_fields_named_like_reserved_attributes_stay_in_the_message(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    odd = entry(1, message="hi", service="billing", ddsource="x", hostname="h")
    await write(sink_for(url), [odd])
    (log,) = fake.logs_received
    assert (log["ddsource"], log["service"], log["hostname"]) == ("gomodel-proxy", "gomodel-audit", "gw-1")
    assert orjson.loads(log["message"]) == odd


async def test_batches_are_split_at_1000_logs(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    batch = [entry(i) for i in range(2500)]
    await write(sink_for(url), batch)
    assert [len(b) for b in fake.batches] == [1000, 1000, 500]
    assert [log["id"] for log in fake.logs_received] == [e["id"] for e in batch]


async def test_batches_are_split_at_5_mb(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    pad = "x" * 400_000  # ~800 KB a log (the entry's fields and its JSON text): 6 fit in 5 MB
    batch = [entry(i, body=pad) for i in range(14)]
    await write(sink_for(url), batch)
    assert [len(b) for b in fake.batches] == [6, 6, 2]
    assert all(log["body"] == pad for log in fake.logs_received)


async def test_an_oversized_log_is_truncated(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    await write(sink_for(url), [entry(1), entry(2, body="é" * 600_000), entry(3)])
    small, big, _ = fake.logs_received
    assert small["id"] == "e-1" and "truncated" not in small
    assert big["id"] == "e-2" and big["truncated"] is True and "body" not in big
    assert big["service"] == "gomodel-audit"
    assert big["message"].startswith('{"id":"e-2"') and len(big["message"].encode()) <= 500_000


async def test_custom_limits(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    await write(sink_for(url, max_logs_per_request=2, max_request_bytes=10_000, max_log_bytes=5_000),
                [entry(1), entry(2), entry(3, body="y" * 6_000)])
    assert [len(b) for b in fake.batches] == [2, 1]
    assert fake.batches[1][0]["truncated"] is True and len(fake.batches[1][0]["message"]) == 2_500


async def test_the_fake_only_takes_real_gzip(make_fake: MakeFake) -> None:
    """What makes the other tests prove the body is gzip on the wire: a gzip-labelled body that is not is refused."""
    import aiohttp  # noqa: PLC0415

    _, url = await make_fake()
    headers = {"DD-API-KEY": API_KEY, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with aiohttp.ClientSession() as session, session.post(url + "/api/v2/logs", data=b"[{}]",
                                                                headers=headers) as resp:
        assert resp.status == 400


async def test_http_status_becomes_a_standard_attribute_and_the_level(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    await write(sink_for(url), [entry(1, status=200), entry(2, status=429), entry(3, status=502),
                                entry(4, status=None), entry(5), entry(6, status=201, http={"method": "POST"})])
    logs = fake.logs_received
    assert [(log.get("status"), log.get("http", {}).get("status_code")) for log in logs] == [
        ("info", 200), ("warn", 429), ("error", 502), ("info", None), (None, None), ("info", 201)]
    assert logs[3]["http"] == {"status_code": None} and "http" not in logs[4]
    assert orjson.loads(logs[2]["message"])["status"] == 502
    assert logs[5]["http"] == {"method": "POST", "status_code": 201}


@pytest.mark.parametrize("status", [400, 413, 429, 500, 503])
async def test_non_2xx_raises(make_fake: MakeFake, status: int) -> None:
    fake, url = await make_fake()
    fake.fail = status
    with pytest.raises(DatadogSinkError, match=f"HTTP {status} to 1 logs: .*intake error"):
        await write(sink_for(url), [entry(1)])


async def test_the_api_key_never_shows(make_fake: MakeFake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake, url = await make_fake()
    fake.echo_key, fake.fail = True, 500
    sink = sink_for(url)
    with pytest.raises(DatadogSinkError, match=r"HTTP 500 to 1 logs: .*intake error, key \*\*\*") as info:
        await write(sink, [entry(1)])
    assert API_KEY not in str(info.value) and API_KEY not in repr(info.value)
    assert API_KEY not in repr(sink)
    wrong = DatadogAuditSink(api_key="ffffffffffffffffffffffffffffffff", url=url)
    with pytest.raises(DatadogSinkError, match=r"HTTP 403 .*Forbidden: \*\*\*"):
        await write(wrong, [entry(1)])
    assert all(API_KEY not in r.getMessage() and "ffffffff" not in r.getMessage() for r in caplog.records)


async def test_server_down_raises(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(DatadogSinkError, match=r"sending 1 logs to 127\.0\.0\.1 failed: ClientConnectorError") as info:
        await write(sink_for(f"http://127.0.0.1:{port}", timeout_s=1), [entry(1)])
    assert time.monotonic() - started < 1
    assert API_KEY not in str(info.value) and info.value.__cause__ is None and info.value.__suppress_context__
    assert all(API_KEY not in r.getMessage() for r in caplog.records)


async def test_stuck_intake_raises_within_timeout(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    fake.fail = "hang"
    started = time.monotonic()
    with pytest.raises(DatadogSinkError, match=r"failed: .*Timeout.*: no answer"):
        await write(sink_for(url, timeout_s=0.3), [entry(1)])
    assert time.monotonic() - started < 0.3 + 1


async def test_url_with_the_full_path_and_from_config(make_fake: MakeFake) -> None:
    fake, url = await make_fake(path="/proxy/api/v2/logs")
    config = AuditConfig(backend="datadog", url=url + "/proxy/api/v2/logs/", api_key=API_KEY, index="svc",
                         timeout_s=2)
    sink = DatadogAuditSink.from_config(config)
    assert sink.intake_url == url + "/proxy/api/v2/logs"
    assert (sink.service, sink.timeout_s, sink.hostname) == ("svc", 2, socket.gethostname())
    await write(sink, [entry(1)])
    assert fake.logs_received[0]["service"] == "svc"


def test_default_intake() -> None:
    sink = DatadogAuditSink(api_key=API_KEY)
    assert sink.intake_url == DEFAULT_INTAKE + "/api/v2/logs" == "https://http-intake.logs.datadoghq.com/api/v2/logs"
    assert DatadogAuditSink(api_key=API_KEY, url="https://http-intake.logs.datadoghq.eu/").intake_url == (
        "https://http-intake.logs.datadoghq.eu/api/v2/logs")


async def test_empty_batch_sends_nothing(make_fake: MakeFake) -> None:
    fake, url = await make_fake()
    await write(sink_for(url), [])
    assert fake.requests == []


async def test_close_is_idempotent() -> None:
    sink = DatadogAuditSink(api_key=API_KEY)
    await sink.close()
    await sink.start()
    await sink.start()
    await sink.close()
    await sink.close()


def test_api_key_is_required() -> None:
    with pytest.raises(ValueError, match=r"audit\.api_key"):
        DatadogAuditSink(api_key="")


@pytest.mark.parametrize("url", ["intake.example", "ftp://intake.example", "/api/v2/logs"])
def test_url_must_be_http(url: str) -> None:
    with pytest.raises(ValueError, match=r"audit\.url"):
        DatadogAuditSink(api_key=API_KEY, url=url)
