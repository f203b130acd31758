"""The ``elasticsearch`` audit sink: each batch goes to the Bulk API (``POST {audit.url}/_bulk``) with aiohttp.

The body is NDJSON (``Content-Type: application/x-ndjson``): for each entry a ``create`` action naming the
index (``audit.index``) and the document ``_id`` (the entry's ``id``), then the entry itself. ``create``
makes a replayed batch idempotent: an entry already stored answers ``409 version_conflict_engine_exception``,
which counts as written; any other per-item error (a mapping conflict, ``429`` rejected execution, ...), a
non-2xx answer or a malformed one makes ``write`` raise, and the pipeline gives the whole batch again.
A large batch is sent in several requests of at most ``max_request_bytes`` (10 MB: Elastic advises bulk
requests of a few MB to a few tens of MB, far below the default ``http.max_content_length`` of 100 MB).

Authentication: ``audit.api_key`` as ``Authorization: ApiKey <api_key>`` (the encoded key Elasticsearch
hands out), otherwise basic auth from the URL's ``user:password@`` if any. Each request is bounded by
``audit.timeout_s``. Errors are ``ElasticsearchSinkError``; the key, the URL and its password are masked
out of their messages.

Tested against a fake Bulk API (tests/unit/audit/test_elasticsearch_sink.py): an aiohttp server on a
loopback port that parses the NDJSON and answers with Elastic's documented response shape
(``{"took", "errors", "items": [{"create": {"_index", "_id", "status", "error"?}}]}``); no real
Elasticsearch server runs in the test suite.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from yarl import URL

from gomodel_proxy.audit.http_sink import HttpBatchSink

if TYPE_CHECKING:
    from gomodel_proxy.config.schema import AuditConfig

_CONFLICT = "version_conflict_engine_exception"
_MAX_REQUEST_BYTES = 10 * 1024 * 1024
_MAX_MESSAGE_CHARS = 300


class ElasticsearchSinkError(RuntimeError):
    """A batch (or part of it) was not stored; the message holds no credential."""


class ElasticsearchAuditSink(HttpBatchSink):
    """Audit entries as documents of an Elasticsearch index (``audit.backend: elasticsearch``)."""

    name = "elasticsearch"

    def __init__(
        self,
        *,
        url: str,
        index: str = "gomodel_audit",
        api_key: str = "",
        timeout_s: float = 5.0,
        max_request_bytes: int = _MAX_REQUEST_BYTES,
    ) -> None:
        if not url:
            raise ValueError("audit.url is required for the elasticsearch backend (http://host:9200)")
        parsed = URL(url)
        if not parsed.absolute or parsed.scheme not in ("http", "https"):
            raise ValueError("audit.url must be an http:// or https:// URL for the elasticsearch backend")
        self.index = index
        self.timeout_s = timeout_s
        self.max_request_bytes = max_request_bytes
        self._bulk_url = parsed.with_user(None).with_query(None).with_fragment(None)
        self._bulk_url = self._bulk_url.with_path(self._bulk_url.path.rstrip("/") + "/_bulk")
        self._headers = {"Content-Type": "application/x-ndjson", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"ApiKey {api_key}"
        elif parsed.user is not None:
            credentials = f"{parsed.user}:{parsed.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
        secrets = (api_key, url, parsed.password, parsed.raw_password, self._headers.get("Authorization"))
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, config: AuditConfig) -> ElasticsearchAuditSink:
        return cls(url=config.url, index=config.index, api_key=config.api_key, timeout_s=config.timeout_s)

    def _requests(self, entries: Sequence[dict[str, Any]]) -> Iterator[tuple[int, bytes]]:
        """The bulk bodies: (entry count, NDJSON), each under ``max_request_bytes`` unless one entry is larger."""
        parts: list[bytes] = []
        size = 0
        for entry in entries:
            action: dict[str, Any] = {"_index": self.index}
            entry_id = entry.get("id")
            if entry_id is not None:
                action["_id"] = str(entry_id)
            pair = (
                orjson.dumps({"create": action}, option=orjson.OPT_APPEND_NEWLINE)
                + orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)
            )
            if parts and size + len(pair) > self.max_request_bytes:
                yield len(parts), b"".join(parts)
                parts, size = [], 0
            parts.append(pair)
            size += len(pair)
        yield len(parts), b"".join(parts)

    async def _send(self, count: int, body: bytes) -> None:
        assert self._session is not None
        try:
            async with self._session.post(self._bulk_url, data=body, headers=self._headers) as resp:
                status = resp.status
                raw = await resp.read()
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            detail = self._redact(str(exc)) or "no answer"
            raise ElasticsearchSinkError(
                f"elasticsearch: bulk request of {count} entries failed: {type(exc).__name__}: {detail}"
            ) from None
        if not 200 <= status < 300:
            raise ElasticsearchSinkError(f"elasticsearch: bulk request answered HTTP {status}: {self._excerpt(raw)}")
        try:
            answer = orjson.loads(raw)
            items = answer["items"]
            failed = answer["errors"] and [item for item in items if not _stored(item)]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, StopIteration):
            raise ElasticsearchSinkError(f"elasticsearch: unexpected bulk answer: {self._excerpt(raw)}") from None
        if failed:
            result = next(iter(failed[0].values()))
            error = result.get("error") or {}
            kind, reason = (error.get("type"), error.get("reason")) if isinstance(error, dict) else (error, None)
            raise ElasticsearchSinkError(
                f"elasticsearch: {len(failed)} of {count} entries not written to {self.index}: "
                f"status {result.get('status')} {kind}: {self._redact(str(reason))[:_MAX_MESSAGE_CHARS]}"
            )
        if len(items) != count:
            raise ElasticsearchSinkError(f"elasticsearch: bulk answer has {len(items)} items for {count} entries")

    def _excerpt(self, raw: bytes) -> str:
        text = self._redact(raw[: _MAX_MESSAGE_CHARS * 4].decode("utf-8", "replace"))
        return text[:_MAX_MESSAGE_CHARS] or "(empty body)"

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _stored(item: dict[str, Any]) -> bool:
    """An item of a bulk answer that is in the index now: created, or there already (a replay)."""
    result = next(iter(item.values()))
    status = result["status"]
    if 200 <= status < 300:
        return True
    error = result.get("error")
    return bool(status == 409 and isinstance(error, dict) and error.get("type") == _CONFLICT)
