"""A tiny blocking HTTP client for tests that drive a gateway process from outside (stdlib only)."""

from __future__ import annotations

import http.client
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson


class HTTPError(Exception):
    """The connection failed or a streamed body ended abnormally."""


class ConnectError(HTTPError):
    pass


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return orjson.loads(self.body)


def _connect(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.connect()
    except OSError as exc:
        raise ConnectError(str(exc)) from exc
    return conn, parts.path + (f"?{parts.query}" if parts.query else "")


def request(method: str, url: str, body: Any = None, *, headers: Mapping[str, str] | None = None,
            timeout: float = 10) -> Reply:
    conn, path = _connect(url, timeout)
    try:
        data = orjson.dumps(body) if body is not None else None
        hdrs = {"Content-Type": "application/json", **(headers or {})} if data is not None else dict(headers or {})
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, dict(resp.getheaders()), resp.read())
    except (OSError, http.client.HTTPException) as exc:
        raise HTTPError(str(exc)) from exc
    finally:
        conn.close()


def get(url: str, **kw: Any) -> Reply:
    return request("GET", url, **kw)


def post(url: str, body: Any, **kw: Any) -> Reply:
    return request("POST", url, body, **kw)


def stream_lines(url: str, body: Any, *, timeout: float = 10) -> Iterator[str]:
    """POST and yield the response's lines as they arrive; raises HTTPError if the body is cut short."""
    conn, path = _connect(url, timeout)
    conn.request("POST", path, body=orjson.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()

    def lines() -> Iterator[str]:
        try:
            while True:
                line = resp.readline()
                if not line:
                    return
                yield line.decode().rstrip("\r\n")
        except (OSError, http.client.HTTPException) as exc:
            raise HTTPError(str(exc)) from exc
        finally:
            conn.close()

    return lines()
