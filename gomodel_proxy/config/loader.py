"""Strict configuration loading: YAML file, ``${VAR}`` expansion, environment overrides, validation.

Every problem is reported with the file, the line, the dotted key, what was expected and how to fix
it, and all problems are reported at once so one edit fixes them all. Nothing half-valid starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import types
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from gomodel_proxy.config.failover_file import load_failover_file
from gomodel_proxy.config.provider_defaults import PROVIDER_DEFAULTS
from gomodel_proxy.config.schema import RESERVED_NAMES, Config, KeyConfig, ProviderConfig, VirtualModelConfig

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: ``GOMODEL__SERVER__PORT=9000`` sets ``server.port``; the double underscore separates path parts.
_OVERRIDE_PREFIX = "GOMODEL__"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason, each self-contained."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


def load_config(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate the configuration at ``path`` (``None``: defaults and the environment only)."""
    environ = dict(os.environ if env is None else env)
    source = str(path) if path is not None else "<defaults>"
    raw: Any = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(
                [f"{source}: file not found; pass --config PATH, set GOMODEL_CONFIG, or create it"]
            )
        data = file.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            column = exc.start - data.rfind(b"\n", 0, exc.start)
            raise ConfigError([f"{source}:{line}:{column}: not UTF-8 text; save the file as UTF-8"]) from None
        try:
            raw = YAML(typ="rt").load(text) or {}
        except MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
            raise ConfigError([f"{where}: not valid YAML: {exc.problem or exc.context}"]) from None
        except ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1
            column = exc.position - text.rfind("\n", 0, exc.position)
            raise ConfigError(
                [f"{source}:{line}:{column}: not valid YAML: {exc.reason}; remove the control character"]
            ) from None
    builder = _Builder(source, environ)
    if not isinstance(raw, Mapping):
        raise ConfigError([f"{source}: the top level must be a mapping of sections (server, providers, ...)"])
    raw = builder.apply_overrides(raw)
    config = builder.build(Config, raw, "", raw, None)
    assert isinstance(config, Config)
    config.source = source
    from_env = _register_env_providers(config, environ)
    # Schema and semantic problems are reported together, so that one edit fixes them all.
    problems = builder.problems + _check_semantics(config, builder, raw, from_env)
    problems += _check_models(config, builder, raw)
    problems += _check_pricing(config, builder, raw, Path(path).parent if path is not None else Path.cwd())
    problems += _check_governance(config, builder, raw)
    problems += _check_cache(config, builder, raw)
    problems += _check_credentials(config, builder, raw, Path(path).parent if path is not None else Path.cwd())
    problems += _check_dashboard(config, builder, raw)
    if config.features.failover and path is not None:
        folder = Path(path).parent
        failover_path = folder / (config.failover_file or "failover.yaml")
        config.failover, failover_problems = load_failover_file(
            failover_path, list(config.providers), required=bool(config.failover_file)
        )
        problems += failover_problems
    if config.features.guardrails and path is not None:
        problems += _load_guardrails(config, Path(path).parent)
    if problems:
        raise ConfigError(problems)
    return config


def _check_credentials(config: Config, builder: _Builder, raw: Mapping[str, Any], folder: Path) -> list[str]:
    """``credentials``: what its ``source`` needs (a file, a master secret and a PostgreSQL database, a Vault
    token or AppRole). ``credentials.file`` is stored resolved (relative to the configuration's folder)."""
    creds = config.credentials
    section = raw.get("credentials") if isinstance(raw.get("credentials"), Mapping) else None
    vault_node = section.get("vault") if section is not None and isinstance(section.get("vault"), Mapping) else None

    def at(key: str) -> str:
        path = f"credentials.{key}"
        parent, name = (vault_node, key[6:]) if key.startswith("vault.") else (section, key)
        if parent is None or name not in parent:
            parent, name = section, "source"
        return f"{builder.where(parent, name, path)}: {path}"

    problems: list[str] = []
    if creds.source == "file":
        if not creds.file:
            problems.append(f"{at('file')}: required for credentials.source: file; set it to the YAML file of "
                            "providers' keys (providers: {<name>: {api_key: ...}}), relative to this file")
        elif "credentials.file" not in builder.bad_paths:
            file = Path(creds.file)
            creds.file = str(file if file.is_absolute() else folder / file)
            if not Path(creds.file).is_file():
                problems.append(f"{at('file')}: {creds.file} not found; create it or fix the path")
    elif creds.source == "postgres":
        if not creds.master_secret:
            problems.append(f"{at('master_secret')}: required for credentials.source: postgres (the keys are "
                            "encrypted with it); set it, e.g. master_secret: ${GOMODEL_CREDENTIALS_SECRET}")
        if not config.database.url.startswith("postgresql"):
            problems.append(f"{at('source')}: postgres keeps the keys in the database: set database.url to "
                            "postgresql+asyncpg://user:password@host:5432/dbname")
    elif creds.source == "vault":
        vault = creds.vault
        if not vault.token and not (vault.role_id and vault.secret_id):
            missing = "secret_id" if vault.role_id else "role_id" if vault.secret_id else "token"
            problems.append(f"{at('vault.' + missing)}: credentials.source: vault needs vault.token, or vault.role_id "
                            "and vault.secret_id (an AppRole); set them (e.g. token: ${VAULT_TOKEN})")
        if not re.match(r"^https?://[^/\s]+", vault.url):
            problems.append(f"{at('vault.url')}: '{vault.url}' is not an http(s) URL; write it as "
                            "https://vault.example.com:8200")
    return problems

#: Hosts an ``http://`` issuer or redirect URL may name: the machine itself (a provider run for development).
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: The route the provider sends the browser back to (``admin.dashboard``); a redirect_url must end with it.
_SSO_CALLBACK = "/admin/dashboard/sso/callback"


def _loopback(host: str) -> bool:
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def _check_dashboard(config: Config, builder: _Builder, raw: Mapping[str, Any]) -> list[str]:
    """``dashboard.sso``: an https issuer (http only on loopback), a client id, groups mapped to roles, the
    admin API on with a master key (sessions are signed with it), and a well-formed ``redirect_url``."""
    sso = config.dashboard.sso
    if sso is None or "dashboard.sso" in builder.bad_paths:
        return []
    section = raw.get("dashboard") if isinstance(raw.get("dashboard"), Mapping) else None
    node = section.get("sso") if section is not None and isinstance(section.get("sso"), Mapping) else None

    def at(key: str) -> str:
        path = f"dashboard.sso.{key}"
        if node is None or key not in node:
            return f"{builder.where(section, 'sso', 'dashboard.sso')}: {path}"
        return f"{builder.where(node, key, path)}: {path}"

    problems: list[str] = []
    if not (config.features.admin_api and config.server.master_key):
        problems.append(f"{builder.where(section, 'sso', 'dashboard.sso')}: dashboard.sso: the dashboard needs the "
                        "admin API and a master key (sessions are signed with it); set features.admin_api: true and "
                        "server.master_key (or GOMODEL_MASTER_KEY), or remove dashboard.sso")
    if "dashboard.sso.issuer" not in builder.bad_paths:
        problem = _url_problem(sso.issuer, "the provider's issuer, e.g. https://idp.example.com/realms/x "
                               "(discovery is read at <issuer>/.well-known/openid-configuration)")
        if problem:
            problems.append(f"{at('issuer')}: {problem}")
    if not sso.client_id.strip() and "dashboard.sso.client_id" not in builder.bad_paths:
        problems.append(f"{at('client_id')}: required; set it to the client id registered for the dashboard at the "
                        "provider (e.g. gomodel-dashboard)")
    if not sso.name.strip() or len(sso.name) > 64:
        problems.append(f"{at('name')}: the sign-in button's label, 1 to 64 characters (e.g. \"Company SSO\"); "
                        "fix it or remove it")
    if "openid" not in sso.scopes or any(not s or any(c.isspace() for c in s) for s in sso.scopes):
        problems.append(f"{at('scopes')}: list scopes without spaces, 'openid' among them "
                        "(default: [openid, profile, email]; add groups where the provider needs it)")
    if not sso.groups_claim.strip():
        problems.append(f"{at('groups_claim')}: name the claim holding the user's groups (default: groups)")
    for key in ("admin_groups", "read_only_groups"):
        if any(not group.strip() for group in getattr(sso, key)):
            problems.append(f"{at(key)}: an empty group name; write the group's name or remove the entry")
    if not sso.admin_groups and not sso.read_only_groups:
        problems.append(f"{at('admin_groups')}: no group would be let in: list the provider's groups whose users "
                        "sign in as admins (admin_groups) and/or read-only (read_only_groups), "
                        "e.g. admin_groups: [gateway-admins]")
    if sso.redirect_url and "dashboard.sso.redirect_url" not in builder.bad_paths:
        problem = _url_problem(sso.redirect_url, f"the dashboard's callback as the provider knows it, e.g. "
                               f"https://gateway.example.com{_SSO_CALLBACK}")
        if problem is None and not urllib.parse.urlsplit(sso.redirect_url).path.endswith(_SSO_CALLBACK):
            problem = (f"'{sso.redirect_url}' does not end with {_SSO_CALLBACK} (the route that completes the "
                       "sign-in); write the full callback URL, e.g. "
                       f"https://gateway.example.com{_SSO_CALLBACK}, or remove it to derive it from each request")
        if problem:
            problems.append(f"{at('redirect_url')}: {problem}")
    return problems


def _url_problem(url: str, what: str) -> str | None:
    """Why ``url`` cannot be an issuer or callback (https, or http on a loopback host; no query or fragment)."""
    if not url.strip():
        return f"required; set it to {what}"
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"'{url}' is not a URL; set it to {what}"
    if parts.scheme not in ("https", "http") or not host or parts.username is not None or parts.password is not None:
        return f"'{url}' is not an https URL; set it to {what}"
    if parts.query or parts.fragment:
        return f"'{url}' has a query or fragment; remove it (set it to {what})"
    if parts.scheme == "http" and not _loopback(host):
        return (f"'{url}' is plain http: sign-in would travel unencrypted; use https (http is accepted only on "
                "localhost/127.0.0.1/::1, for a provider run on this machine)")
    return None


def _check_cache(config: Config, builder: _Builder, raw: Mapping[str, Any]) -> list[str]:
    """The response cache's backend and semantic provider exist."""
    responses = config.cache.responses
    if not responses.enabled:
        return []
    problems: list[str] = []
    cache = raw.get("cache") if isinstance(raw.get("cache"), Mapping) else None
    if config.cache.backend == "redis" and not config.redis.url:
        problems.append(f"{builder.where(cache, 'backend', 'cache.backend')}: cache.backend: redis needs redis.url "
                        "(e.g. redis://127.0.0.1:6379/0); set it, or use backend: local")
    semantic = responses.semantic
    if semantic.enabled and semantic.provider not in config.providers:
        node = cache.get("responses") if cache is not None else None
        node = node.get("semantic") if isinstance(node, Mapping) else None
        problems.append(
            f"{builder.where(node, 'provider', 'cache.responses.semantic.provider')}: "
            f"cache.responses.semantic.provider: '{semantic.provider}' is not a configured provider; name one "
            f"with an embeddings endpoint: {', '.join(config.providers) or '(none configured)'}"
        )
    return problems


def _load_guardrails(config: Config, folder: Path) -> list[str]:
    """``guardrails.yaml`` (or ``guardrails.file``): every entry checked; a moderation backend names a
    configured provider. Read only when the file is there (or named), so a gateway without it pays nothing."""
    target = folder / (config.guardrails.file or "guardrails.yaml")
    if not config.guardrails.file and not target.exists():
        return []
    from gomodel_proxy.guardrails.config_file import load_guardrails_file  # noqa: PLC0415 - phonenumbers

    specs, problems = load_guardrails_file(target, required=bool(config.guardrails.file))
    for spec in specs:
        provider = spec.config.get("provider") if spec.kind == "content-filter" else None
        if provider and provider not in config.providers:
            problems.append(
                f"{target}: guardrails.{spec.name}.config.provider: '{provider}' is not a configured provider; "
                f"name one of: {', '.join(config.providers) or '(none configured)'}"
            )
    config.guardrails.specs = specs
    return problems


def _register_env_providers(config: Config, env: Mapping[str, str]) -> dict[str, str]:
    """Add a provider for each known ``<TYPE>_API_KEY`` set in the environment and absent from the file.

    Returns, per provider added, the environment variable its ``base_url`` came from (for messages).
    """
    added: dict[str, str] = {}
    for kind, defaults in PROVIDER_DEFAULTS.items():
        if defaults.env_key is None or kind in config.providers:
            continue
        key = env.get(defaults.env_key, "").strip()
        base_var = f"{kind.upper()}_BASE_URL"
        base = env.get(base_var, "").strip() or defaults.base_url
        if key and base:  # a type with no common host (Azure) also needs its <TYPE>_BASE_URL
            config.providers[kind] = ProviderConfig(type=kind, base_url=base, api_key=key)  # type: ignore[arg-type]
            added[kind] = f"environment {base_var if env.get(base_var, '').strip() else defaults.env_key}"
    if env.get("GOMODEL_MASTER_KEY") and not config.server.master_key:
        config.server.master_key = env["GOMODEL_MASTER_KEY"]
    return added


def _check_semantics(config: Config, builder: _Builder, raw: Mapping[str, Any], from_env: dict[str, str]) -> list[str]:
    problems: list[str] = []
    nodes = raw.get("providers")
    for name, provider in config.providers.items():
        if provider is None:  # its schema problem (a missing 'type') is reported already
            continue
        where = functools.partial(_provider_where, builder, nodes, name, from_env.get(name))
        if name in RESERVED_NAMES:
            problems.append(
                f"{where(None)}: '{name}' is reserved for the gateway's own routes "
                f"({', '.join(sorted(RESERVED_NAMES))}); rename the provider"
            )
        elif not _PROVIDER_NAME.match(name):
            problems.append(
                f"{where(None)}: provider names are lower-case letters, digits, '-' and '_' "
                "(they appear in model ids such as 'openai/gpt-4o-mini'); rename it"
            )
        defaults = PROVIDER_DEFAULTS.get(provider.type)
        if defaults is None:  # a bad 'type', reported already
            continue
        if not provider.base_url:
            provider.base_url = defaults.base_url
        if provider.type == "mock":
            if provider.base_url:
                problems.append(f"{where('base_url')}: a mock provider has no upstream; remove base_url")
            continue
        if provider.mock is not None:
            problems.append(f"{where('mock')}: only a provider of type 'mock' takes mock settings; remove it")
        problems.extend(_check_resilience(provider, where))
        if f"providers.{name}.base_url" in builder.bad_paths:
            continue
        if not provider.base_url:
            problems.append(
                f"{where('base_url')}: required for type '{provider.type}'; "
                "set it to the server's OpenAI-compatible root, e.g. http://127.0.0.1:8000/v1"
            )
        elif not re.match(r"^https?://[^/\s]+", provider.base_url):
            problems.append(
                f"{where('base_url')}: '{provider.base_url}' is not an http(s) URL; "
                "write it as https://host[:port]/path"
            )
    return problems


def _check_models(config: Config, builder: _Builder, raw: Mapping[str, Any]) -> list[str]:
    """Aliases and virtual models: a name no provider has; targets that name a configured provider."""
    problems: list[str] = []
    nodes = raw.get("models")
    for name, entry in config.models.items():
        at = f"{builder.where(nodes, name, f'models.{name}')}: models.{name}"
        prefix = name.partition("/")[0]
        if name in config.providers or ("/" in name and prefix in config.providers):
            problems.append(f"{at}: '{name}' clashes with the provider '{prefix}'; rename the alias")
        elif name in RESERVED_NAMES or not name.strip():
            problems.append(f"{at}: '{name}' cannot be a model name; rename it")
        if entry is None:
            continue
        if isinstance(entry, VirtualModelConfig):
            if not entry.targets:
                problems.append(f"{at}.targets: list at least one target, e.g. [{{model: openai/gpt-4o}}]")
            targets = [(f"targets[{i}].model", t.model) for i, t in enumerate(entry.targets) if t is not None]
        else:
            targets = [("", entry)]
        for sub, target in targets:
            t_prefix, sep, rest = target.partition("/")
            if not sep or not rest or t_prefix not in config.providers:
                hint = f" (configured: {', '.join(config.providers) or 'none'})"
                problems.append(
                    f"{at}{'.' + sub if sub else ''}: '{target}' must be 'provider/model' with a configured "
                    f"provider{hint}; fix the target"
                )
    return problems


def _check_pricing(config: Config, builder: _Builder, raw: Mapping[str, Any], folder: Path) -> list[str]:
    """``pricing``: inline ids name a provider type; ``pricing.file`` exists and is a valid price file.

    ``pricing.file`` is stored resolved (relative to the configuration's folder) for ``billing.pricing``.
    """
    from gomodel_proxy.billing.pricing import load_price_file, split_inline_id  # noqa: PLC0415 - import cycle

    problems: list[str] = []
    section = raw.get("pricing")
    nodes = section.get("models") if isinstance(section, Mapping) else None
    for key in config.pricing.models:
        _, problem = split_inline_id(key)
        if problem:
            problems.append(f"{builder.where(nodes, key, f'pricing.models.{key}')}: pricing.models.{key}: {problem}")
    if config.pricing.file and "pricing.file" not in builder.bad_paths:
        file = Path(config.pricing.file)
        config.pricing.file = str(file if file.is_absolute() else folder / file)
        _, file_problems = load_price_file(Path(config.pricing.file))
        problems += file_problems
    return problems


def _check_governance(config: Config, builder: _Builder, raw: Mapping[str, Any]) -> list[str]:
    """``database.url`` and ``redis.url`` are usable URLs; the admin API has a master key; a JWT issuer
    has keys to verify with. Secret values are never shown."""
    problems: list[str] = []

    def node(*keys: str) -> Any:
        cur: Any = raw
        for k in keys:
            cur = cur.get(k) if isinstance(cur, Mapping) else None
        return cur

    if config.database.url and "database.url" not in builder.bad_paths:
        # SQLAlchemy reads the URL: imported only when one is configured (it is slow to import).
        from gomodel_proxy.storage.database import check_url  # noqa: PLC0415 - import cycle

        problem = check_url(config.database.url)
        if problem:
            problems.append(f"{builder.where(node('database'), 'url', 'database.url')}: database.url: {problem}")
    schema = config.database.schema
    if schema and (not schema.isidentifier() or not config.database.url.startswith("postgresql")):
        problems.append(
            f"{builder.where(node('database'), 'schema', 'database.schema')}: database.schema: a PostgreSQL "
            "schema name (letters, digits, '_'), for a postgresql+asyncpg:// database.url only; remove it or fix it"
        )
    url = config.redis.url
    if url and "redis.url" not in builder.bad_paths:
        where = f"{builder.where(node('redis'), 'url', 'redis.url')}: redis.url"
        if not re.match(r"^(redis|rediss|unix)://", url):
            problems.append(f"{where}: not a Redis URL (not shown: it may hold a password); "
                            "write it as redis://[:password@]host:6379/0")
        else:
            # Read as the limiters will read it; the messages name the part, never the password.
            from gomodel_proxy.limits.resp import parse_redis_url  # noqa: PLC0415

            try:
                parse_redis_url(url)
            except ValueError as exc:
                problems.append(f"{where}: {exc}; write it as redis://[:password@]host:6379/0")
    if config.features.admin_api and not config.server.master_key:
        problems.append(
            f"{builder.where(node('features'), 'admin_api', 'features.admin_api')}: features.admin_api: the admin "
            "API needs a master key; set server.master_key (or GOMODEL_MASTER_KEY), or turn admin_api off"
        )
    jwt = config.auth.jwt
    if jwt is not None and "auth.jwt" not in builder.bad_paths:
        where = builder.where(node("auth"), "jwt", "auth.jwt")
        if bool(jwt.jwks_url) == bool(jwt.public_key):
            problems.append(
                f"{where}: auth.jwt: set exactly one of jwks_url (the issuer's JWKS address) and public_key "
                "(PEM text or the path of a PEM file)"
            )
        elif jwt.jwks_url and not re.match(r"^https?://[^/\s]+", jwt.jwks_url):
            problems.append(f"{where}: auth.jwt.jwks_url: '{jwt.jwks_url}' is not an http(s) URL")
        if not jwt.algorithms:
            problems.append(f"{where}: auth.jwt.algorithms: list at least one of RS256, ES256, ...")
    return problems


def _check_resilience(provider: ProviderConfig, where: Callable[[str | None], str]) -> list[str]:
    """The keyring's keys (none twice; a mapping's key not empty) and the retry statuses (HTTP error statuses).

    An empty plain string is skipped, as before (``"${KEY_2:-}"``: a key that may be unset)."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(provider.api_keys):
        key = entry.key if isinstance(entry, KeyConfig) else entry
        if not isinstance(key, str) or not key.strip():
            if isinstance(entry, KeyConfig) or entry is None:
                problems.append(
                    f"{where('api_keys')}[{i}]: an empty key; write the key (or ${{ENV_VAR}}) or remove the entry"
                )
            continue
        if key in seen or key == provider.api_key:
            first = f"api_keys[{seen[key]}]" if key in seen else "api_key"
            problems.append(
                f"{where('api_keys')}[{i}]: the same key as {first} (not shown: it is a secret); "
                "list each key once"
            )
        seen.setdefault(key, i)
    bad = [s for s in provider.retry.on_status if not 400 <= s <= 599]
    if bad:
        problems.append(
            f"{where('retry')}.on_status: {bad} are not HTTP error statuses; list statuses from 400 to 599 "
            "(e.g. [429, 500, 502, 503, 504, 529])"
        )
    return problems


def _provider_where(builder: _Builder, nodes: Any, name: str, env_origin: str | None, key: str | None) -> str:
    """Where provider ``name``'s ``key`` (or the provider itself) was set, and its dotted path."""
    path = f"providers.{name}" + (f".{key}" if key else "")
    if env_origin is not None:
        return f"{env_origin}: {path}"
    node = nodes.get(name) if isinstance(nodes, Mapping) else None
    if key is not None and isinstance(node, Mapping) and key in node:
        return f"{builder.where(node, key, path)}: {path}"
    return f"{builder.where(nodes, name, path)}: {path}"


class _Builder:
    """Turns YAML nodes into schema dataclasses, collecting problems with their positions."""

    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env
        self.problems: list[str] = []
        #: Dotted paths that have a problem reported already.
        self.bad_paths: set[str] = set()
        #: Dotted paths set by a ``GOMODEL__...`` variable, and that variable's name.
        self.overridden: dict[str, str] = {}
        #: Set while building a secret field: its value never appears in a message.
        self._secret = False

    # -- positions and messages -----------------------------------------------------------------
    def where(self, parent: Any, key: Any, path: str = "") -> str:
        parts = path.split(".")
        for n in range(len(parts), 0, -1):
            var = self.overridden.get(".".join(parts[:n]))
            if var is not None:
                return f"environment {var}"
        lc = getattr(parent, "lc", None)
        if lc is not None:
            try:
                line, col = lc.key(key) if isinstance(key, str) else lc.item(key)
                return f"{self.source}:{line + 1}:{col + 1}"
            except (KeyError, IndexError, TypeError, AttributeError):
                # A key merged in from an anchor (``<<: *base``) has no position: give its mapping's.
                if getattr(lc, "line", None) is not None:
                    return f"{self.source}:{lc.line + 1}:{lc.col + 1}"
        return self.source

    def _problem(self, parent: Any, key: Any, path: str, message: str) -> None:
        self.bad_paths.add(path)
        self.problems.append(f"{self.where(parent, key, path)}: {path}: {message}")

    def _kind(self, value: Any) -> str:
        if self._secret and not (value is None or isinstance(value, (Mapping, list))):
            return f"{type(value).__name__} (not shown: the key holds a secret)"
        return _kind(value)

    # -- environment ----------------------------------------------------------------------------
    def expand(self, value: str, parent: Any, key: Any, path: str) -> str:
        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in self.env:
                return self.env[name]
            return default if default is not None else ""

        return _VAR.sub(repl, value) if "${" in value else value

    def apply_overrides(self, raw: Mapping[str, Any]) -> Any:
        data: Any = raw
        for name, value in sorted(self.env.items()):
            if not name.startswith(_OVERRIDE_PREFIX):
                continue
            parts = [p.lower() for p in name[len(_OVERRIDE_PREFIX) :].split("__") if p]
            if not parts:
                continue
            node = data
            for depth, part in enumerate(parts[:-1], 1):
                if not isinstance(node.get(part), Mapping):
                    node[part] = {}
                    # Everything under a section the variable created comes from it (e.g. a new provider).
                    self.overridden.setdefault(".".join(parts[:depth]), name)
                node = node[part]
            node[parts[-1]] = _override_value(value)
            self.overridden[".".join(parts)] = name
        return data

    # -- conversion -----------------------------------------------------------------------------
    def build(self, tp: Any, value: Any, path: str, parent: Any, key: Any) -> Any:
        label = path or "(top level)"
        if isinstance(value, str):
            value = self.expand(value, parent, key, label)
        origin = get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in get_args(tp) if a is not type(None)]
            if value is None:
                return None
            chosen = options[0]
            if len(options) > 1:  # ``str | KeyConfig``: a mapping is the structured form, a scalar the plain one
                structured = [o for o in options if dataclasses.is_dataclass(o)]
                plain = [o for o in options if not dataclasses.is_dataclass(o)]
                chosen = (structured if isinstance(value, Mapping) and structured else plain or options)[0]
            return self.build(chosen, value, path, parent, key)
        if origin is Literal:
            allowed = get_args(tp)
            if value not in allowed:
                hint = _suggest(str(value), [str(a) for a in allowed])
                self._problem(
                    parent, key, label,
                    f"{value!r} is not accepted; expected one of {', '.join(map(repr, allowed))}{hint}",
                )
            return value
        if dataclasses.is_dataclass(tp):
            return self._build_dataclass(tp, value, path, parent, key)
        if origin is list:
            (item_tp,) = get_args(tp)
            if not isinstance(value, list):
                self._problem(parent, key, label, f"expected a list, got {self._kind(value)}")
                return []
            return [self.build(item_tp, v, f"{path}[{i}]", value, i) for i, v in enumerate(value)]
        if origin is dict:
            _, val_tp = get_args(tp)
            if not isinstance(value, Mapping):
                self._problem(parent, key, label, f"expected a mapping, got {self._kind(value)}")
                return {}
            return {str(k): self.build(val_tp, v, f"{path}.{k}", value, k) for k, v in value.items()}
        return self._scalar(tp, value, label, parent, key)

    def _scalar(self, tp: Any, value: Any, label: str, parent: Any, key: Any) -> Any:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            self._problem(parent, key, label, f"expected true or false, got {value!r}")
            return False
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
                return int(value)
            self._problem(parent, key, label, f"expected a whole number, got {value!r}")
            return 0
        if tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            self._problem(parent, key, label, f"expected a number, got {value!r}")
            return 0.0
        if tp is str:
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                return str(value)
            self._problem(parent, key, label, f"expected a string, got {self._kind(value)}")
            return ""
        raise TypeError(f"unsupported config type {tp!r}")  # pragma: no cover - schema bug

    def _build_dataclass(self, tp: Any, value: Any, path: str, parent: Any, key: Any) -> Any:
        label = path or "(top level)"
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            self._problem(parent, key, label, f"expected a mapping of settings, got {self._kind(value)}")
            value = {}
        hints = typing.get_type_hints(tp)
        # A field's YAML key is its name, or ``metadata["key"]`` where the name is a Python keyword.
        fields = {f.metadata.get("key", f.name): f for f in dataclasses.fields(tp) if not f.metadata.get("internal")}
        kwargs: dict[str, Any] = {}
        for name, item in value.items():
            sub = f"{path}.{name}" if path else str(name)
            if name not in fields:
                hint = _suggest(str(name), list(fields))
                self._problem(
                    value, name, sub,
                    f"unknown key{hint}; accepted here: {', '.join(fields)}",
                )
                continue
            meta = fields[name].metadata
            outer_secret = self._secret  # inside a secret list (api_keys), every field stays secret
            self._secret = outer_secret or bool(meta.get("secret"))
            try:
                built = self.build(hints[fields[name].name], item, sub, value, name)
            finally:
                self._secret = outer_secret
            if isinstance(built, (int, float)) and not isinstance(built, bool) and sub not in self.bad_paths:
                if "min" in meta and built < meta["min"]:
                    self._problem(value, name, sub, f"must be at least {meta['min']}, got {built}")
                if "max" in meta and built > meta["max"]:
                    self._problem(value, name, sub, f"must be at most {meta['max']}, got {built}")
            kwargs[fields[name].name] = built
        for name, f in fields.items():
            no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if f.name not in kwargs and no_default:
                if label in self.bad_paths:  # not a mapping at all: reported already
                    return None
                hint = ""
                if name == "type":
                    hint = f" (one of {', '.join(get_args(hints[name]))})"
                self._problem(parent, key, label, f"missing required key '{name}'{hint}")
                return None
        return tp(**kwargs)


def _override_value(value: str) -> Any:
    """A ``GOMODEL__...`` value read as YAML (numbers, booleans, lists); as the plain string when it is not YAML."""
    if not value:
        return ""
    try:
        return YAML(typ="safe").load(value)
    except YAMLError:
        return value


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
