"""Shared helpers of the unit tests: where the recorded provider traffic lives, and how to list it.

The fixtures are read in place (never copied into the repository): ``$GOMODEL_FIXTURES`` when set,
else ``../shared/fixtures`` beside the repository root. Tests that need them skip, saying why, when
they are absent.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Providers whose streams are OpenAI chat-completions streams.
CHAT_STREAM_DIRS = ("openai/chat-completions", "groq", "openrouter", "xai")
#: Directories holding OpenAI-shaped non-stream bodies that carry ``usage``.
USAGE_BODY_DIRS = ("openai/chat-completions", "openai/embeddings", "openai/responses", "groq", "openrouter", "xai")


def fixtures_root() -> Path | None:
    configured = os.environ.get("GOMODEL_FIXTURES")
    root = Path(configured) if configured else REPO_ROOT.parent / "shared" / "fixtures"
    return root if root.is_dir() else None


def _absent_reason() -> str:
    configured = os.environ.get("GOMODEL_FIXTURES")
    where = configured or str(REPO_ROOT.parent / "shared" / "fixtures")
    return f"recorded provider fixtures not found at {where} (set GOMODEL_FIXTURES to their directory)"


def fixture_params(dirs: tuple[str, ...], pattern: str, *, exclude_prefix: str | None = None) -> list[Any]:
    """``pytest.param(path, id=relative path)`` for each fixture matching ``pattern`` under ``dirs``.

    When the fixtures are absent, one parameter that skips with the reason, so the gap is visible.
    """
    root = fixtures_root()
    if root is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=_absent_reason()), id="fixtures-absent")]
    files = sorted(
        {f for d in dirs for f in (root / d).rglob(pattern)
         if not (exclude_prefix and f.name.startswith(exclude_prefix))}
    )
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {pattern} fixture under {dirs} in {root}"),
                             id="fixtures-empty")]
    return [pytest.param(f, id=str(f.relative_to(root))) for f in files]


def fixture_file(relative: str) -> Path:
    """One fixture by its path under the fixtures root; skips when the fixtures are absent."""
    root = fixtures_root()
    if root is None:
        pytest.skip(_absent_reason())
    path = root / relative
    if not path.is_file():
        pytest.skip(f"fixture {relative} not found under {root}")
    return path


def meta_of(response_file: Path) -> dict[str, Any]:
    """The ``.meta.json`` beside a ``.response.*`` fixture."""
    name = response_file.name.split(".response.")[0]
    meta: dict[str, Any] = orjson.loads((response_file.parent / f"{name}.meta.json").read_bytes())
    return meta


def request_of(response_file: Path) -> dict[str, Any] | None:
    name = response_file.name.split(".response.")[0]
    path = response_file.parent / f"{name}.request.json"
    if not path.is_file():
        return None
    body: dict[str, Any] = orjson.loads(path.read_bytes())
    return body


SSE_SEPARATORS = (b"\n\n", b"\r\n\r\n", b"\r\r")


def reference_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """A deliberately naive SSE framer: at each step, cut at the earliest end of any terminator.

    Returns the whole events (each with its terminator) and the partial event left at the end.
    """
    events: list[bytes] = []
    start = 0
    while True:
        ends = [buffer.find(sep, start) + len(sep) for sep in SSE_SEPARATORS if buffer.find(sep, start) >= 0]
        if not ends:
            return events, buffer[start:]
        end = min(ends)
        events.append(buffer[start:end])
        start = end


def data_of(event: bytes) -> bytes | None:
    """The joined ``data:`` lines of one raw event, parsed independently of the package; None without any."""
    lines = [line for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[5:].removeprefix(b" ") for line in lines)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given positions (duplicates and out-of-range cuts ignored)."""
    points = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]
