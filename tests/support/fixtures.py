"""Locating and loading the recorded provider traffic in ``../shared/fixtures`` (read in place, never copied).

The folder is found from this file: ``tests/support/fixtures.py`` -> repository root -> ``../shared/fixtures``;
the environment variable ``GOMODEL_FIXTURES`` overrides that. Tests that need it call :func:`require_fixtures`
(or load through :func:`load_fixture`), which skips with a clear reason when the folder is absent.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
_ENV = "GOMODEL_FIXTURES"
_SUFFIXES = (".response.sse", ".response.chunks.jsonl", ".response.json")


def fixtures_root() -> Path | None:
    """The fixtures folder, or ``None`` when it is not there."""
    configured = os.environ.get(_ENV, "").strip()
    root = Path(configured).expanduser() if configured else REPO_ROOT.parent / "shared" / "fixtures"
    return root.resolve() if root.is_dir() else None


def require_fixtures() -> Path:
    """The fixtures folder; skips the calling test when it is absent."""
    root = fixtures_root()
    if root is None:
        where = os.environ.get(_ENV) or str(REPO_ROOT.parent / "shared" / "fixtures")
        pytest.skip(f"recorded provider fixtures not found at {where} (set {_ENV} to their folder)")
    return root


@dataclass(frozen=True)
class Fixture:
    """One recorded interaction: ``<dir>/<name>.{meta.json,request.json,response.*}``."""

    rel: str  # e.g. "openai/chat-completions/stream-text-no-usage-gpt4o-mini"
    base: Path  # the path without suffixes
    kind: str  # "sse", "chunks" or "json"

    @property
    def name(self) -> str:
        return self.base.name

    @cached_property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = json.loads(self.base.with_name(self.name + ".meta.json").read_text("utf-8"))
        return meta

    @property
    def status(self) -> int:
        return int(self.meta.get("status") or 200)

    @property
    def recorded_headers(self) -> dict[str, str]:
        return dict(self.meta.get("response_headers") or {})

    @property
    def content_type(self) -> str:
        """The recorded Content-Type, or the one the body's form implies when none was recorded."""
        for name, value in self.recorded_headers.items():
            if name.lower() == "content-type":
                return str(value)
        return "application/json" if self.kind == "json" else "text/event-stream"

    @property
    def is_stream(self) -> bool:
        return self.kind in ("sse", "chunks")

    @cached_property
    def raw(self) -> bytes:
        """The file's bytes as stored."""
        suffix = {"sse": ".response.sse", "chunks": ".response.chunks.jsonl", "json": ".response.json"}[self.kind]
        return self.base.with_name(self.name + suffix).read_bytes()

    @cached_property
    def body(self) -> bytes:
        """The bytes a provider sends: the SSE or JSON file as is; chunk lines re-framed as SSE events."""
        if self.kind != "chunks":
            return self.raw
        lines = [line for line in self.raw.splitlines() if line.strip()]
        return b"".join(b"data: " + line + b"\n\n" for line in lines) + b"data: [DONE]\n\n"

    @cached_property
    def request(self) -> dict[str, Any] | None:
        path = self.base.with_name(self.name + ".request.json")
        if not path.is_file():
            return None
        request: dict[str, Any] = json.loads(path.read_text("utf-8"))
        return request

    @cached_property
    def json(self) -> Any:
        if self.kind != "json":
            raise ValueError(f"{self.rel} is a stream, not a JSON body")
        return json.loads(self.raw)

    # -- streams ------------------------------------------------------------------------------
    @cached_property
    def events(self) -> list[bytes]:
        """The body's raw SSE events, each with its terminating blank line (bytes joined == body)."""
        return split_sse_events(self.body)

    @cached_property
    def data_payloads(self) -> list[Any]:
        """Every ``data:`` payload parsed as JSON, in order, ``[DONE]`` excluded."""
        out = []
        for event in self.events:
            data = sse_data(event)
            if data is not None and data != b"[DONE]":
                out.append(json.loads(data))
        return out

    @property
    def usage(self) -> dict[str, Any] | None:
        """The provider's usage figures: the last ``usage`` object in the body (or x_groq.usage)."""
        if self.kind == "json":
            usage = self.json.get("usage")
            return usage if isinstance(usage, dict) else None
        found: dict[str, Any] | None = None
        for payload in self.data_payloads:
            if isinstance(payload.get("usage"), dict):
                found = payload["usage"]
            elif isinstance(payload.get("x_groq"), dict) and isinstance(payload["x_groq"].get("usage"), dict):
                found = payload["x_groq"]["usage"]
        return found


def split_sse_events(body: bytes) -> list[bytes]:
    """Split SSE bytes at blank lines (LF, CRLF or CR), keeping every byte (``b"".join(result) == body``)."""
    events: list[bytes] = []
    start = 0
    while start < len(body):
        ends = [pos + len(sep) for sep in (b"\n\n", b"\r\n\r\n", b"\r\r") if (pos := body.find(sep, start)) >= 0]
        if not ends:
            events.append(body[start:])
            break
        end = min(ends)
        events.append(body[start:end])
        start = end
    return events


def sse_data(event: bytes) -> bytes | None:
    """The joined ``data:`` lines of one raw event, ``None`` when it has none (a comment, say)."""
    lines = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines) if lines else None


def sse_event_name(event: bytes) -> str | None:
    for line in event.splitlines():
        if line.startswith(b"event:"):
            return line[6:].strip().decode()
    return None


def load_fixture(rel: str) -> Fixture:
    """Load ``<provider>/<endpoint>/<name>`` (skips the test when the fixtures folder is absent)."""
    root = require_fixtures()
    base = root / rel
    for suffix in _SUFFIXES:
        if base.with_name(base.name + suffix).is_file():
            kind = {".response.sse": "sse", ".response.chunks.jsonl": "chunks", ".response.json": "json"}[suffix]
            return Fixture(rel=rel, base=base, kind=kind)
    raise FileNotFoundError(f"no recorded response for fixture {rel!r} under {root}")


def fixture_names(folder: str, prefix: str = "") -> list[str]:
    """``<folder>/<name>`` for every fixture in ``folder`` whose name starts with ``prefix``.

    Usable at collection time (for parametrisation): returns ``[]`` when the fixtures are absent, so the
    tests that use it should also call :func:`require_fixtures` (an empty parametrisation is skipped).
    """
    root = fixtures_root()
    if root is None or not (root / folder).is_dir():
        return []
    names = sorted(p.name[: -len(".meta.json")] for p in (root / folder).glob("*.meta.json"))
    return [f"{folder}/{n}" for n in names if n.startswith(prefix)]
