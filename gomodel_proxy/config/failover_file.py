"""Strict loading of ``failover.yaml`` (the architecture's format), kept apart from the main configuration.

Why a file of its own: the architecture gives failover chains their own file, so operators may edit them
without touching providers and secrets. It is read like the main file: every problem names the file, the
line, the key and the fix, all problems at once, and nothing half-valid starts::

    failover:
      openai/gpt-5: [openai/gpt-5-mini, openrouter/gpt-5, anthropic/claude-3-opus]
      openai/*: [openrouter/*, azure/*]      # provider-level: the wildcard keeps the model name
    triggers:
      status_codes: [429, 500, 502, 503, 504]
      timeout_ms: 30000
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from gomodel_proxy.config.schema import FailoverSettings, FailoverTriggers

_TOP = ("failover", "triggers")
_TRIGGERS = ("status_codes", "timeout_ms")


def load_failover_file(path: Path, providers: Collection[str], *, required: bool) -> tuple[FailoverSettings, list[str]]:
    """The settings in ``path`` and the problems found (each ``file:line:col: key: what; fix``).

    ``providers``: the configured provider names (a chain may name only those). A missing file is no
    problem unless ``required`` (named explicitly by ``failover_file``).
    """
    source = str(path)
    settings = FailoverSettings()
    if not path.is_file():
        if required:
            return settings, [f"{source}: failover_file not found; create it or fix failover_file in the main config"]
        return settings, []
    settings.source = source
    try:
        raw: Any = YAML(typ="rt").load(path.read_text(encoding="utf-8")) or {}
    except (YAMLError, UnicodeDecodeError) as exc:
        return settings, [f"{source}: not valid YAML (or not UTF-8): {exc}".replace("\n", " ")]
    problems: list[str] = []

    def where(parent: Any, key: Any) -> str:
        lc = getattr(parent, "lc", None)
        try:
            line, col = lc.key(key) if isinstance(key, str) else lc.item(key)  # type: ignore[union-attr]
            return f"{source}:{line + 1}:{col + 1}"
        except (AttributeError, KeyError, IndexError, TypeError):
            return source

    if not isinstance(raw, Mapping):
        return settings, [f"{source}: the top level must be a mapping with 'failover' and 'triggers'"]
    for key in raw:
        if key not in _TOP:
            problems.append(f"{where(raw, key)}: {key}: unknown key{_suggest(str(key), _TOP)}; "
                            f"accepted here: {', '.join(_TOP)}")
    chains = raw.get("failover") or {}
    if not isinstance(chains, Mapping):
        problems.append(f"{where(raw, 'failover')}: failover: expected a mapping of 'provider/model' (or "
                        "'provider/*') to a list of targets")
        chains = {}
    for name, targets in chains.items():
        path_ = f"failover.{name}"
        at = where(chains, name)
        wildcard = _check_id(str(name), providers, at, path_, problems)
        if not isinstance(targets, list) or not targets:
            problems.append(f"{at}: {path_}: expected a non-empty list of targets, e.g. [openrouter/gpt-5]")
            continue
        out: list[str] = []
        for i, target in enumerate(targets):
            t_at = where(targets, i)
            if not isinstance(target, str):
                problems.append(f"{t_at}: {path_}[{i}]: expected a 'provider/model' string, got {target!r}")
                continue
            t_wild = _check_id(target, providers, t_at, f"{path_}[{i}]", problems)
            if wildcard and t_wild is False:
                problems.append(f"{t_at}: {path_}[{i}]: a provider-level chain ('{name}') takes provider-level "
                                f"targets; write '{target.partition('/')[0]}/*'")
            if target == name:
                problems.append(f"{t_at}: {path_}[{i}]: a chain cannot fall back to itself; remove it")
            out.append(target)
        settings.chains[str(name)] = out
    triggers = raw.get("triggers")
    if triggers is not None:
        settings.triggers = _triggers(triggers, raw, where, problems)
    return settings, problems


def _check_id(value: str, providers: Collection[str], at: str, path: str, problems: list[str]) -> bool | None:
    """True for ``provider/*``, False for ``provider/model``, None when the id is malformed (reported)."""
    prefix, sep, rest = value.partition("/")
    if not sep or not prefix or not rest:
        problems.append(f"{at}: {path}: '{value}' is not 'provider/model' or 'provider/*'; name the provider")
        return None
    if prefix not in providers:
        problems.append(f"{at}: {path}: no provider named '{prefix}'{_suggest(prefix, list(providers))}; "
                        f"configured: {', '.join(providers) or 'none'}")
        return None
    if "*" in rest and rest != "*":
        problems.append(f"{at}: {path}: only a whole '*' is a wildcard ('{prefix}/*'); '{value}' is neither")
        return None
    return rest == "*"


def _triggers(node: Any, parent: Any, where: Any, problems: list[str]) -> FailoverTriggers:
    out = FailoverTriggers()
    if not isinstance(node, Mapping):
        problems.append(f"{where(parent, 'triggers')}: triggers: expected a mapping with "
                        f"{' and '.join(_TRIGGERS)}")
        return out
    for key, value in node.items():
        at = where(node, key)
        if key == "status_codes":
            if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 400 <= v <= 599 for v in value
            ):
                problems.append(f"{at}: triggers.status_codes: expected a list of HTTP error statuses "
                                f"(400-599), e.g. [429, 500, 502, 503, 504]; got {value!r}")
            else:
                out.status_codes = list(value)
        elif key == "timeout_ms":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                problems.append(f"{at}: triggers.timeout_ms: expected a positive number of milliseconds, "
                                f"e.g. 30000; got {value!r}")
            else:
                out.timeout_ms = float(value)
        else:
            problems.append(f"{at}: triggers.{key}: unknown key{_suggest(str(key), _TRIGGERS)}; "
                            f"accepted here: {', '.join(_TRIGGERS)}")
    return out


def _suggest(word: str, options: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
