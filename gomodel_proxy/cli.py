"""Command line: ``gomodel-proxy [--config PATH] [--host H] [--port P] [--workers N]``, ``check-config``,
``reload [--pid-file F | --pid N]`` (SIGHUP to the running gateway: it reloads its configuration)."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

import orjson

from gomodel_proxy import __version__
from gomodel_proxy.config import ConfigError, load_config
from gomodel_proxy.config.schema import Config

DEFAULT_CONFIG = "conf/config.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gomodel-proxy", description="A fast, lean AI gateway.")
    parser.add_argument("command", nargs="?", choices=["serve", "check-config", "reload"], default="serve",
                        help="serve (default); check-config: validate and print the resolved configuration; "
                        "reload: make the running gateway reload its configuration (SIGHUP)")
    parser.add_argument("--config", help=f"configuration file (default: $GOMODEL_CONFIG or {DEFAULT_CONFIG})")
    parser.add_argument("--host", help="address to listen on (overrides server.host)")
    parser.add_argument("--port", type=int, help="port to listen on (overrides server.port)")
    parser.add_argument("--workers", type=int, help="worker processes sharing the port (overrides server.workers)")
    parser.add_argument("--pid-file", help="serve: where to write the process id; reload: where to read it "
                        "(default: <cache.dir>/gomodel.pid)")
    parser.add_argument("--pid", type=int, help="reload: the process to signal (instead of the pid file)")
    parser.add_argument("--version", action="version", version=f"gomodel-proxy {__version__}")
    return parser


def _config_path(arg: str | None) -> str | None:
    if arg:
        return arg
    env = os.environ.get("GOMODEL_CONFIG")
    if env:
        return env
    return DEFAULT_CONFIG if os.path.isfile(DEFAULT_CONFIG) else None


def mask_secrets(config: Config) -> dict[str, Any]:
    """The configuration as plain data with every secret replaced by a short, non-reversible tag."""

    def walk(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            out = {}
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                name = f.metadata.get("key", f.name)  # the YAML key (``global`` for ``global_``)
                if f.metadata.get("mask") == "url" and isinstance(value, str):
                    out[name] = _mask_url(value)
                else:
                    out[name] = _mask(value) if f.metadata.get("secret") else walk(value)
            return out
        if isinstance(obj, Mapping):  # dicts, and the read-only mappings of the guardrails' settings
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [walk(v) for v in obj]
        if isinstance(obj, re.Pattern):  # a regex guardrail's compiled pattern: shown as written
            return obj.pattern
        return obj

    result: dict[str, Any] = walk(config)
    return result


def _mask_url(url: str) -> str:
    """A service URL with its password (if any) replaced by ``***``: where it points stays readable."""
    return _URL_PASSWORD.sub(r"\1***@", url)


_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.\-]*://[^:/@]*:)[^@]*@", re.IGNORECASE)


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return f"***(sha256:{hashlib.sha256(value.encode()).hexdigest()[:8]})" if value else ""
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    return value


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = _parser().parse_args(argv)
    if args.command == "reload":
        return _reload(args)
    try:
        config = load_config(_config_path(args.config))
    except ConfigError as exc:
        print(f"gomodel-proxy: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        sys.stdout.write(orjson.dumps(mask_secrets(config), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    from gomodel_proxy.server.runner import run  # noqa: PLC0415 - keeps check-config light

    run(
        config,
        host=args.host or config.server.host,
        port=args.port or config.server.port,
        workers=args.workers or config.server.workers,
        started=started,
        pid_file=args.pid_file,
    )
    return 0


def _reload(args: argparse.Namespace) -> int:
    """Send SIGHUP to the running gateway; it logs the outcome (``POST /admin/reload`` answers with it)."""
    import signal  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from gomodel_proxy.server.pidfile import default_pid_file, read_pid_file  # noqa: PLC0415

    pid = args.pid
    if pid is None:
        if args.pid_file:
            pid_file = Path(args.pid_file)
        else:
            try:
                pid_file = default_pid_file(load_config(_config_path(args.config)))
            except ConfigError as exc:
                print(f"gomodel-proxy: cannot find the pid file (cache.dir) in an invalid configuration: {exc}\n"
                      "pass --pid-file or --pid", file=sys.stderr)
                return 2
        try:
            pid = read_pid_file(pid_file)
        except FileNotFoundError:
            print(f"gomodel-proxy: {pid_file}: no pid file; is the gateway running (with this cache.dir)? "
                  "pass --pid-file or --pid", file=sys.stderr)
            return 1
        except (OSError, ValueError) as exc:
            print(f"gomodel-proxy: {exc}", file=sys.stderr)
            return 1
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"gomodel-proxy: no process {pid}: the gateway is not running (a stale pid file?)", file=sys.stderr)
        return 1
    except PermissionError:
        print(f"gomodel-proxy: not allowed to signal process {pid}; run as the gateway's user", file=sys.stderr)
        return 1
    print(f"gomodel-proxy: sent SIGHUP to {pid}: it reloads its configuration and logs the outcome "
          "(POST /admin/reload answers with it)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
