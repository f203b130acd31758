"""The gateway's pid file: written once it handles SIGHUP, removed at exit; ``gomodel-proxy reload`` reads it.

Kept apart from the server modules so that the ``reload`` command imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from gomodel_proxy.config.schema import Config

PID_FILE_NAME = "gomodel.pid"


def default_pid_file(config: Config) -> Path:
    """``<cache.dir>/gomodel.pid``: one gateway (or one ``--workers`` parent) per cache directory."""
    return Path(config.cache.dir) / PID_FILE_NAME


def write_pid_file(path: Path, pid: int | None = None) -> None:
    """Write ``pid`` (this process by default) atomically: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{pid if pid is not None else os.getpid()}\n", encoding="ascii")
    os.replace(tmp, path)


def remove_pid_file(path: Path, pid: int | None = None) -> None:
    """Remove the pid file if it still names ``pid`` (this process): a newer gateway's file is left alone."""
    with contextlib.suppress(OSError, ValueError):
        if read_pid_file(path) == (pid if pid is not None else os.getpid()):
            path.unlink()


def read_pid_file(path: Path) -> int:
    """The pid in ``path``; ``ValueError`` when the file does not hold one (``OSError`` when unreadable)."""
    text = path.read_text(encoding="ascii", errors="replace").strip()
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"{path}: not a pid file (expected a process id, found {text[:20]!r})")
    return int(text)
