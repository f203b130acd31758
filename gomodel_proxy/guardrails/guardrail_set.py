"""The configured guardrails, built once, and the ones that apply to a given caller.

Scoping (``keys``/``teams`` in ``guardrails.yaml``) names keys and teams by id or by name; the tuple that
applies to a caller is worked out once per (key, team) and kept, so the request path does a dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gomodel_proxy.core.interfaces import Provider
from gomodel_proxy.core.types import Principal
from gomodel_proxy.guardrails.interface import Guardrail, GuardrailSpec

#: Key id -> key name and team id -> team name, for scoping by name (``None``: ids only).
NameLookup = Callable[[Principal], tuple[str | None, str | None]]


def build_guardrail(spec: GuardrailSpec, *, providers: Mapping[str, Provider], hold_back: int,
                    logger: Any) -> Guardrail:
    """The guardrail a spec describes; the modules of the kinds not configured are never imported."""
    config = spec.config
    if spec.kind == "pii-redactor":
        from gomodel_proxy.guardrails.pii_redactor import PIIRedactor  # noqa: PLC0415 - phonenumbers

        return PIIRedactor(spec.name, spec.priority, config, hold_back=hold_back)
    if spec.kind == "regex":
        from gomodel_proxy.guardrails.regex_filter import RegexFilter  # noqa: PLC0415

        return RegexFilter(spec.name, spec.priority, config, hold_back=hold_back)
    if spec.kind == "system-prompt":
        from gomodel_proxy.guardrails.system_prompt import SystemPrompt  # noqa: PLC0415

        return SystemPrompt(spec.name, spec.priority, config)
    if spec.kind == "token-limiter":
        from gomodel_proxy.guardrails.token_limiter import TokenLimiter  # noqa: PLC0415 - tiktoken

        return TokenLimiter(spec, logger=logger)
    from gomodel_proxy.guardrails.content_filter import ContentFilter  # noqa: PLC0415

    provider = providers.get(config.get("provider") or "") if config.get("backend") == "moderation" else None
    return ContentFilter(spec, provider=provider, hold_back=hold_back)


class GuardrailSet:
    """The enabled guardrails in priority order, each with the keys and teams it is limited to."""

    def __init__(self, entries: Sequence[tuple[GuardrailSpec, Guardrail]], *, names: NameLookup | None = None) -> None:
        self.entries = sorted(((s, g) for s, g in entries if s.enabled), key=lambda e: e[0].priority)
        self.names = names
        self.unscoped = all(s.keys is None and s.teams is None for s, _ in self.entries)
        self._everyone = tuple(g for _, g in self.entries)
        self._by_caller: dict[tuple[str | None, str | None], tuple[Guardrail, ...]] = {}

    def __bool__(self) -> bool:
        return bool(self.entries)

    @property
    def guardrails(self) -> tuple[Guardrail, ...]:
        return self._everyone

    def applicable(self, principal: Principal) -> tuple[Guardrail, ...]:
        if self.unscoped:
            return self._everyone
        caller = (principal.key_id, principal.team_id)
        found = self._by_caller.get(caller)
        if found is None:
            key_name, team_name = self.names(principal) if self.names is not None else (None, None)
            keys = {k for k in (principal.key_id, key_name) if k}
            teams = {t for t in (principal.team_id, team_name) if t}
            found = tuple(g for s, g in self.entries if _applies(s, keys, teams))
            if len(self._by_caller) > 100_000:  # bounded: callers come from the key table, but still
                self._by_caller.clear()
            self._by_caller[caller] = found
        return found

    def forget(self) -> None:
        """Keys or teams changed (names, membership): work the scoping out again."""
        self._by_caller.clear()


def _applies(spec: GuardrailSpec, keys: set[str], teams: set[str]) -> bool:
    if spec.keys is None and spec.teams is None:
        return True
    return bool(spec.keys and keys.intersection(spec.keys)) or bool(spec.teams and teams.intersection(spec.teams))
