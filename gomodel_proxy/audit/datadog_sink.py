"""The ``datadog`` audit sink: entries sent as logs to the Datadog Logs intake API v2 with aiohttp.

``POST {audit.url}/api/v2/logs`` (default ``https://http-intake.logs.datadoghq.com``, Datadog US1; other
sites have their own intake host, e.g. ``https://http-intake.logs.datadoghq.eu``) with the API key in the
``DD-API-KEY`` header and a JSON array of log objects, gzip-compressed (``Content-Encoding: gzip``). Each
log carries ``ddsource: "gomodel-proxy"``, ``service`` (``audit.index``), ``hostname``, ``message`` (the
entry as JSON text) and the entry's fields as attributes (where a field is named like one of those, the
field is only in ``message``). The entry's ``status`` (the HTTP status) would be read by Datadog as the
log's level (a reserved attribute): it is sent as ``http: {status_code}`` (Datadog's standard attribute) and
the level as ``status`` (``error`` for 5xx, ``warn`` for 4xx, ``info`` otherwise).

The documented limits are kept: at most 1000 logs and 5 MB (uncompressed) per request, so a batch is
split into as many requests as needed; a log over 1 MB (which Datadog would truncate) is sent as its
``id`` and the first 500 KB of its JSON text, marked ``truncated``. Any 2xx answer (the intake's is ``202``)
means accepted; anything else, or no answer within ``audit.timeout_s`` per request, raises
``DatadogSinkError``, whose message never holds the API key. Datadog has no idempotent write: a batch
replayed after a failure it could not tell from success may appear twice (each log keeps its ``id``).

Tested against a fake intake (tests/unit/audit/test_datadog_sink.py): an aiohttp server on a loopback port
that checks the headers and body shape documented for the v2 logs endpoint and answers like it (``202
{}``, ``400``/``403``/``413``/``429``/``5xx`` with ``{"errors": [...]}``); no Datadog endpoint is reached.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from yarl import URL

from gomodel_proxy.audit.http_sink import HttpBatchSink

if TYPE_CHECKING:
    from gomodel_proxy.config.schema import AuditConfig

DEFAULT_INTAKE = "https://http-intake.logs.datadoghq.com"
_PATH = "/api/v2/logs"
SOURCE = "gomodel-proxy"
#: Datadog's documented limits for one request to the v2 logs intake, and for one log.
MAX_LOGS_PER_REQUEST = 1000
MAX_REQUEST_BYTES = 5_000_000
MAX_LOG_BYTES = 1_000_000
#: Bodies larger than this are compressed in a thread rather than on the event loop.
_INLINE_GZIP_BYTES = 64 * 1024
_MAX_MESSAGE_CHARS = 300


class DatadogSinkError(RuntimeError):
    """Datadog did not accept (part of) a batch; the message never holds the API key."""


class DatadogAuditSink(HttpBatchSink):
    """Audit entries as Datadog logs (``audit.backend: datadog``)."""

    name = "datadog"

    def __init__(
        self,
        *,
        api_key: str,
        url: str = "",
        index: str = "gomodel_audit",
        timeout_s: float = 5.0,
        hostname: str | None = None,
        compress: bool = True,
        max_logs_per_request: int = MAX_LOGS_PER_REQUEST,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_log_bytes: int = MAX_LOG_BYTES,
    ) -> None:
        if not api_key:
            raise ValueError("audit.api_key (a Datadog API key) is required for the datadog backend")
        base = URL(url or DEFAULT_INTAKE)
        if not base.absolute or base.scheme not in ("http", "https"):
            raise ValueError("audit.url must be an http:// or https:// URL (the Datadog logs intake)")
        path = base.path.rstrip("/")
        self._intake = base.with_path(path if path.endswith(_PATH) else path + _PATH)
        self.service = index
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self.timeout_s = timeout_s
        self.compress = compress
        self.max_logs_per_request = max_logs_per_request
        self.max_request_bytes = max_request_bytes
        self.max_log_bytes = max_log_bytes
        self._api_key = api_key
        self._headers = {"DD-API-KEY": api_key, "Content-Type": "application/json", "Accept": "application/json"}
        if compress:
            self._headers["Content-Encoding"] = "gzip"
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, config: AuditConfig) -> DatadogAuditSink:
        return cls(api_key=config.api_key, url=config.url, index=config.index, timeout_s=config.timeout_s)

    @property
    def intake_url(self) -> str:
        return str(self._intake)

    def __repr__(self) -> str:
        return f"DatadogAuditSink(intake={self._intake.with_user(None)!s}, service={self.service!r})"

    def _log(self, entry: dict[str, Any]) -> bytes:
        """One log object, serialized; an entry over ``max_log_bytes`` becomes a truncated stand-in."""
        text = orjson.dumps(entry, option=orjson.OPT_NON_STR_KEYS)
        fixed = {"ddsource": SOURCE, "service": self.service, "hostname": self.hostname}
        attributes = dict(entry)
        if "status" in attributes:  # the HTTP status: Datadog's reserved ``status`` is the log's level
            code = attributes.pop("status")
            http = attributes.get("http")
            attributes["http"] = {**(http if isinstance(http, dict) else {}), "status_code": code}
            fixed["status"] = _level(code)
        log = orjson.dumps({**attributes, **fixed, "message": text.decode()}, option=orjson.OPT_NON_STR_KEYS)
        if len(log) <= self.max_log_bytes:
            return log
        # Half the limit: quoted again as ``message``, the text can grow up to twice (every ``"`` and ``\``).
        head = text[: self.max_log_bytes // 2].decode("utf-8", "ignore")
        return orjson.dumps({"id": entry.get("id"), **fixed, "message": head, "truncated": True})

    def _requests(self, entries: Sequence[dict[str, Any]]) -> Iterator[tuple[int, bytes]]:
        """JSON arrays of at most ``max_logs_per_request`` logs and ``max_request_bytes`` bytes."""
        logs: list[bytes] = []
        size = 2  # the brackets
        for entry in entries:
            log = self._log(entry)
            if logs and (len(logs) >= self.max_logs_per_request or size + 1 + len(log) > self.max_request_bytes):
                yield len(logs), b"[" + b",".join(logs) + b"]"
                logs, size = [], 2
            size += len(log) + (1 if logs else 0)
            logs.append(log)
        yield len(logs), b"[" + b",".join(logs) + b"]"

    async def _send(self, count: int, body: bytes) -> None:
        assert self._session is not None
        if self.compress:
            body = (
                gzip.compress(body, 6)
                if len(body) <= _INLINE_GZIP_BYTES
                else await asyncio.to_thread(gzip.compress, body, 6)
            )
        try:
            async with self._session.post(self._intake, data=body, headers=self._headers) as resp:
                status = resp.status
                raw = await resp.read()
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            detail = self._redact(str(exc)) or "no answer"
            raise DatadogSinkError(
                f"datadog: sending {count} logs to {self._intake.host} failed: {type(exc).__name__}: {detail}"
            ) from None
        if not 200 <= status < 300:
            text = self._redact(raw[: _MAX_MESSAGE_CHARS * 4].decode("utf-8", "replace"))[:_MAX_MESSAGE_CHARS]
            raise DatadogSinkError(
                f"datadog: the logs intake answered HTTP {status} to {count} logs: {text or '(empty body)'}"
            )

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***")


def _level(code: Any) -> str:
    """The log level for an entry's HTTP status: ``error`` for 5xx, ``warn`` for 4xx, ``info`` otherwise."""
    if isinstance(code, int) and not isinstance(code, bool):
        return "error" if code >= 500 else "warn" if code >= 400 else "info"
    return "info"
