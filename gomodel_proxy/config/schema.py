"""The configuration schema: plain dataclasses whose fields are the accepted keys.

The loader validates YAML against these types, so a key or value the schema does not name is refused
at start-up. ``Literal`` fields list the values that work in this version; ``help`` metadata is the
hint printed next to an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ProviderType = Literal[
    "openai", "groq", "xai", "openrouter", "openai_compatible", "anthropic", "gemini", "azure", "mock"
]

#: Path segments the gateway uses itself; a provider may not take one as its name (architecture §5).
RESERVED_NAMES = frozenset({"v1", "v2", "admin", "health", "healthz", "ready", "live", "metrics"})


@dataclass(slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata={"min": 1, "max": 65535})
    master_key: str | None = field(default=None, metadata={"secret": True})
    workers: int = field(default=1, metadata={"min": 1, "max": 256})
    body_limit_mb: float = field(default=32.0, metadata={"min": 0.001})
    shutdown_grace_s: float = field(default=30.0, metadata={"min": 0})
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"


@dataclass(slots=True)
class FeaturesConfig:
    """The architecture's feature switches; those whose component is not built yet must stay off."""

    #: The request chain (auth's model check, rate limits, budgets); off: none of it runs.
    middleware: bool = True
    guardrails: bool = True
    audit_logging: bool = False
    #: ``/admin/*`` (needs ``server.master_key``: the admin API is never open).
    admin_api: bool = False
    failover: bool = True
    #: RPM/TPM limits of keys, users, teams and the gateway (``rate_limits``).
    rate_limiting: bool = True
    #: Spend caps of keys, users, teams and the gateway (admin API ``/admin/budgets``).
    budgets: bool = True
    #: One usage record per API request in the database (``usage``).
    usage_tracking: bool = True


@dataclass(slots=True)
class MockConfig:
    """Behaviour of a ``type: mock`` provider: deterministic answers, no network."""

    latency_ms: float = field(default=0.0, metadata={"min": 0})
    chunk_delay_ms: float = field(default=0.0, metadata={"min": 0})
    tokens_per_chunk: int = field(default=1, metadata={"min": 1})
    completion_tokens: int = field(default=16, metadata={"min": 0})
    embedding_dimensions: int = field(default=8, metadata={"min": 1, "max": 8192})


@dataclass(slots=True)
class KeyConfig:
    """One entry of ``api_keys`` written as a mapping: the key and its own share and limits."""

    key: str = field(metadata={"secret": True})
    #: Share of the traffic under ``key_strategy: weighted`` (relative to the other keys' weights).
    weight: float = field(default=1.0, metadata={"min": 0.001})
    #: Requests per minute this key may take (0: no limit of the gateway's own).
    rpm: int = field(default=0, metadata={"min": 0})
    #: Tokens per minute this key may use, counted from the usage of its answers (0: no limit).
    tpm: int = field(default=0, metadata={"min": 0})


@dataclass(slots=True)
class RetryConfig:
    """When the gateway sends a request to the same provider again (always before the client saw a byte)."""

    #: Sends of one request in all, the first included (1: never retry). A 401/403/429 answered by one
    #: key moves the request to the next key at once, which does not count here.
    max_attempts: int = field(default=2, metadata={"min": 1, "max": 10})
    backoff_base_ms: float = field(default=250.0, metadata={"min": 0})
    #: The longest wait before a retry; a ``retry-after`` longer than this is not waited for (no retry).
    backoff_max_ms: float = field(default=4000.0, metadata={"min": 0})
    #: Full jitter: each wait is drawn between 0 and the exponential backoff.
    jitter: bool = True
    on_status: list[int] = field(default_factory=lambda: [429, 500, 502, 503, 504, 529])
    #: Refused, reset or closed connections, DNS and TLS failures.
    on_connection_error: bool = True
    #: A provider that did not answer within ``timeout_s`` (it may have done the work: off by default).
    on_timeout: bool = False


@dataclass(slots=True)
class CircuitBreakerConfig:
    """A breaker per provider and per key: after ``failure_threshold`` failures (connection errors,
    timeouts, 5xx, 529) within ``window_s`` requests fail fast with 503 for ``cooldown_s``; then
    ``half_open_requests`` probes decide between closing it and another cooldown."""

    enabled: bool = True
    failure_threshold: int = field(default=5, metadata={"min": 1})
    window_s: float = field(default=10.0, metadata={"min": 0.001})
    cooldown_s: float = field(default=30.0, metadata={"min": 0.001})
    half_open_requests: int = field(default=1, metadata={"min": 1})


@dataclass(slots=True)
class ProviderConfig:
    type: ProviderType
    base_url: str = ""
    api_key: str = field(default="", metadata={"secret": True})
    #: Plain strings or mappings ``{key, weight, rpm, tpm}`` (see ``KeyConfig``).
    api_keys: list[str | KeyConfig] = field(default_factory=list, metadata={"secret": True})
    #: How a request picks among several keys: ``round_robin`` or ``weighted`` (by ``weight``).
    key_strategy: Literal["round_robin", "weighted"] = "round_robin"
    models: list[str] = field(default_factory=list)
    timeout_s: float = field(default=600.0, metadata={"min": 0.001})
    connect_timeout_s: float = field(default=10.0, metadata={"min": 0.001})
    max_connections: int = field(default=0, metadata={"min": 0})
    stream_usage: bool = True
    headers: dict[str, str] = field(default_factory=dict, metadata={"secret": True})
    #: Anthropic: the ``anthropic-version`` header; Azure: the ``api-version`` query parameter.
    api_version: str = ""
    #: Anthropic: ``max_tokens`` sent when an OpenAI client gives none (Anthropic requires it).
    default_max_tokens: int = field(default=4096, metadata={"min": 1})
    #: Azure: model name -> deployment name (a model not listed is taken as its own deployment name).
    deployments: dict[str, str] = field(default_factory=dict)
    retry: RetryConfig = field(default_factory=RetryConfig)
    circuit_breaker: CircuitBreakerConfig = field(default_factory=CircuitBreakerConfig)
    mock: MockConfig | None = None


@dataclass(slots=True)
class VaultConfig:
    """HashiCorp Vault's KV v2: one secret per provider at ``<mount>/data/<path>/<provider>`` whose keys
    ``api_key`` / ``api_keys`` (a list, or comma-separated) are the provider's keys."""

    url: str = "http://127.0.0.1:8200"
    mount: str = "secret"
    path: str = "gomodel/providers"
    #: A token, or an AppRole (``role_id`` + ``secret_id``) to log in with.
    token: str = field(default="", metadata={"secret": True})
    role_id: str = ""
    secret_id: str = field(default="", metadata={"secret": True})
    #: Vault Enterprise namespace ("": none).
    namespace: str = ""
    timeout_s: float = field(default=5.0, metadata={"min": 0.1})


@dataclass(slots=True)
class CredentialsConfig:
    """Where providers' keys come from (``CredentialStore.get_provider_keys``); reloaded on SIGHUP, by
    ``POST /admin/credentials/reload`` and every ``reload_s``: a rotated key is used by the next request."""

    source: Literal["env", "file", "postgres", "vault"] = "env"
    #: ``file``: a YAML file ``providers: {name: {api_key: ..., api_keys: [...]}}`` (relative: to the config).
    file: str = ""
    #: ``postgres``: keys encrypted at rest with this secret (AES-GCM, key derived with scrypt); required.
    master_secret: str = field(default="", metadata={"secret": True})
    vault: VaultConfig = field(default_factory=VaultConfig)
    #: How often the store is read again (0: only on SIGHUP and the admin endpoint).
    reload_s: float = field(default=30.0, metadata={"min": 0})


@dataclass(slots=True)
class SemanticCacheConfig:
    """Answers for prompts that mean the same (embeddings from ``provider``, cosine >= ``threshold``), kept in
    this process's memory; only requests equal in everything but their wording can match."""

    enabled: bool = False
    #: A configured provider with an embeddings endpoint, and its model.
    provider: str = ""
    model: str = "text-embedding-3-small"
    threshold: float = field(default=0.95, metadata={"min": 0.5, "max": 1.0})
    max_entries: int = field(default=10_000, metadata={"min": 1, "max": 1_000_000})


@dataclass(slots=True)
class ResponseCacheConfig:
    """The response cache (``cache.backend``: local memory or Redis); off unless ``enabled``."""

    enabled: bool = False
    ttl_s: float = field(default=3600.0, metadata={"min": 1})
    #: TTL per model (``provider/model`` or the name the client asked for) and per key (its id or name).
    ttl_by_model: dict[str, float] = field(default_factory=dict)
    ttl_by_key: dict[str, float] = field(default_factory=dict)
    #: ``tenant``: a team's (else a key's) answers are its own; ``global``: every caller shares them.
    namespace: Literal["tenant", "global"] = "tenant"
    #: Local backend: the memory it may hold, and whether it is saved to ``cache.dir`` at shutdown.
    max_mb: float = field(default=256.0, metadata={"min": 0.01})
    persist: bool = False
    #: Answers larger than this are not stored.
    max_entry_kb: float = field(default=1024.0, metadata={"min": 1})
    semantic: SemanticCacheConfig = field(default_factory=SemanticCacheConfig)


@dataclass(slots=True)
class CacheConfig:
    #: Where the response cache lives: ``local`` (this process) or ``redis`` (``redis.url``, shared).
    backend: Literal["local", "redis"] = "local"
    dir: str = ".cache/gomodel-proxy"
    model_refresh_s: float = field(default=3600.0, metadata={"min": 1})
    model_fetch_timeout_s: float = field(default=5.0, metadata={"min": 0.01})
    responses: ResponseCacheConfig = field(default_factory=ResponseCacheConfig)


@dataclass(slots=True)
class GuardrailsConfig:
    """Where the guardrails are described (``features.guardrails``) and how streamed answers are checked."""

    #: The guardrails file, relative to this file's folder ("": ``guardrails.yaml`` beside it, if present).
    file: str = ""
    #: Characters of a streamed answer held back so that a pattern split across chunks is still caught.
    hold_back_chars: int = field(default=64, metadata={"min": 0, "max": 4096})
    #: The validated entries of the file (not a YAML key).
    specs: list[Any] = field(default_factory=list, metadata={"internal": True})


@dataclass(slots=True)
class DatabaseConfig:
    """Where keys, users, teams, budgets and usage records live (``gomodel_proxy.storage.database``).

    ``url``: ``sqlite+aiosqlite:///path/to/file.db`` (embedded) or
    ``postgresql+asyncpg://user:password@host:5432/dbname``. Empty: the SQLite file ``gomodel.db`` in
    ``cache.dir``. It is a secret (it may carry a password): check-config shows a tag, never the value.
    """

    url: str = field(default="", metadata={"secret": True, "mask": "url"})
    #: Connections kept open per gateway process (PostgreSQL; SQLite file databases too).
    pool_size: int = field(default=5, metadata={"min": 1, "max": 200})
    #: Connections opened beyond ``pool_size`` under load, closed again when returned.
    max_overflow: int = field(default=10, metadata={"min": 0, "max": 1000})
    #: PostgreSQL only: the schema (namespace) holding the gateway's tables, created when missing
    #: ("": the server's ``search_path``, usually ``public``).
    schema: str = ""


@dataclass(slots=True)
class RedisConfig:
    """Shared state for several gateway instances: rate-limit buckets and budget counters.

    ``url`` empty: both live in this process's memory (exact for one instance only).
    """

    url: str = field(default="", metadata={"secret": True, "mask": "url"})
    #: Prefix of every key the gateway writes, so that instances of other gateways can share a server.
    key_prefix: str = "gomodel:"
    #: The longest a limiter command may take before Redis counts as unreachable.
    timeout_ms: float = field(default=250.0, metadata={"min": 1})
    #: What a request meets while Redis is unreachable: ``open`` lets it through unlimited (and logs
    #: it), ``closed`` refuses it with 503. Either way the gateway retries Redis after ``retry_s``.
    on_failure: Literal["open", "closed"] = "open"
    retry_s: float = field(default=1.0, metadata={"min": 0.01})


@dataclass(slots=True)
class JWTConfig:
    """Tokens from an identity provider accepted in place of a key (``Authorization: Bearer <jwt>``).

    Verified with ``public_key`` (PEM text or a path to a PEM file) or the keys at ``jwks_url``; only
    the asymmetric ``algorithms`` listed are accepted (``none`` and HMAC never).
    """

    issuer: str
    audience: str = ""
    jwks_url: str = ""
    public_key: str = field(default="", metadata={"secret": True})
    algorithms: list[Literal["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]] = field(
        default_factory=lambda: ["RS256", "ES256"]
    )
    #: The claim naming the user, and the one naming the team (dotted paths into nested claims work).
    user_claim: str = "sub"
    team_claim: str = "team"
    #: A claim whose value ``true`` (or a list containing ``admin``) grants the admin API ("": never).
    admin_claim: str = ""
    leeway_s: float = field(default=30.0, metadata={"min": 0})
    jwks_refresh_s: float = field(default=600.0, metadata={"min": 1})


@dataclass(slots=True)
class AuthConfig:
    jwt: JWTConfig | None = None
    #: How often each instance reads key, user and team changes from the database (a change made on
    #: this instance applies at once; on the others within this time).
    refresh_s: float = field(default=2.0, metadata={"min": 0.05})


@dataclass(slots=True)
class RateLimitPair:
    #: Requests per minute (0: no limit).
    rpm: int = field(default=0, metadata={"min": 0})
    #: Tokens (input + output) per minute (0: no limit).
    tpm: int = field(default=0, metadata={"min": 0})


@dataclass(slots=True)
class RateLimitsConfig:
    """Token buckets refilled continuously: a limit of ``rpm`` holds ``rpm`` requests, refilled at
    ``rpm`` a minute. Keys, users and teams set their own through the admin API."""

    #: Applied to every key that sets none of its own.
    default_key: RateLimitPair = field(default_factory=RateLimitPair)
    #: All traffic through the gateway together (over every instance sharing Redis).
    global_: RateLimitPair = field(default_factory=RateLimitPair, metadata={"key": "global"})


@dataclass(slots=True)
class BudgetsConfig:
    #: Output tokens reserved against a budget when a request sets no ``max_tokens`` (its answer may
    #: cost more than that: set ``max_tokens`` for an exact bound).
    default_output_tokens: int = field(default=1024, metadata={"min": 1})


@dataclass(slots=True)
class UsageConfig:
    """The usage writer: records queue in memory and go to the database in batches."""

    batch_size: int = field(default=500, metadata={"min": 1, "max": 100_000})
    flush_interval_ms: float = field(default=200.0, metadata={"min": 1})
    #: Where records wait while the database is down (replayed when it is back); "": ``cache.dir``.
    spool_dir: str = ""


@dataclass(slots=True)
class AuditConfig:
    """Who sent what, when, to which model, and what came back (``features.audit_logging``).

    Entries are queued in memory and written by background tasks in batches; a sink that is slow or down
    makes them spill to files in ``spill_dir`` (replayed when it is back); nothing waits on it.
    """

    backend: Literal["noop", "file", "postgres", "mongodb", "elasticsearch", "datadog"] = "noop"
    #: ``file``: the JSON-lines file ("": ``audit.jsonl`` in ``cache.dir``), rotated by size and by age.
    path: str = ""
    max_file_mb: float = field(default=100.0, metadata={"min": 0.01})
    rotate_s: float = field(default=86_400.0, metadata={"min": 1})
    keep_files: int = field(default=7, metadata={"min": 1, "max": 10_000})
    #: Where the sink is: ``postgres`` ("": ``database.url``), ``mongodb`` (``mongodb://...``),
    #: ``elasticsearch`` (``http://host:9200``), ``datadog`` (the logs intake, default Datadog US1's).
    url: str = field(default="", metadata={"secret": True, "mask": "url"})
    #: ``datadog``: the API key; ``elasticsearch``: an API key (``Authorization: ApiKey ...``), optional.
    api_key: str = field(default="", metadata={"secret": True})
    #: The table (postgres), collection (mongodb), index (elasticsearch) or service (datadog) written to.
    index: str = "gomodel_audit"
    #: Request and response bodies in the entries (off: only what describes the request), each cut at
    #: ``max_body_kb``; a streamed answer is reassembled from what passed, without delaying it.
    include_bodies: bool = False
    max_body_kb: float = field(default=64.0, metadata={"min": 1})
    queue_size: int = field(default=10_000, metadata={"min": 10, "max": 10_000_000})
    batch_size: int = field(default=500, metadata={"min": 1, "max": 100_000})
    flush_interval_ms: float = field(default=200.0, metadata={"min": 1})
    #: Where entries wait while the sink is slow or down ("": ``cache.dir``).
    spill_dir: str = ""
    #: The longest a batch may take to write before the sink counts as slow (its entries then spill).
    timeout_s: float = field(default=5.0, metadata={"min": 0.01})


@dataclass(slots=True)
class TargetConfig:
    """One target of a virtual model: a ``provider/model`` id and its share under ``weighted``."""

    model: str
    weight: float = field(default=1.0, metadata={"min": 0.001})


@dataclass(slots=True)
class VirtualModelConfig:
    """A name clients use that the gateway spreads over several targets (``routing.balancer``)."""

    targets: list[TargetConfig]
    strategy: Literal["weighted", "weighted_random", "round_robin", "least_in_flight", "lowest_latency"] = "weighted"


@dataclass(slots=True)
class FailoverTriggers:
    """When a request moves on to the next target of its chain."""

    status_codes: list[int] = field(default_factory=lambda: [429, 500, 502, 503, 504, 529])
    #: Time to the status line (the first byte of a stream, the whole answer's head otherwise).
    timeout_ms: float = 30000.0


@dataclass(slots=True)
class FailoverSettings:
    """``failover.yaml`` once loaded (``routing.failover``): chains by model or ``provider/*``, triggers."""

    chains: dict[str, list[str]] = field(default_factory=dict)
    triggers: FailoverTriggers = field(default_factory=FailoverTriggers)
    #: The file it came from ("" when none was found).
    source: str = ""


@dataclass(slots=True)
class ModelPriceConfig:
    """The price of one model in USD per million tokens (``billing.pricing``); a price left out of
    ``cached_input``/``cache_write`` is the ``input`` price, of ``reasoning`` the ``output`` price."""

    input: float = field(metadata={"min": 0})
    output: float = field(metadata={"min": 0})
    cached_input: float | None = field(default=None, metadata={"min": 0})
    cache_write: float | None = field(default=None, metadata={"min": 0})
    reasoning: float | None = field(default=None, metadata={"min": 0})


@dataclass(slots=True)
class PricingConfig:
    """Overrides of the price table shipped with the gateway: ``inline models > file > shipped``."""

    #: A YAML price file merged over the shipped table (the shipped file's format: ``prices: {type:
    #: {model: {input, output, ...}}}``); relative to this file's folder.
    file: str = ""
    #: ``provider_type/model`` (e.g. ``openai/gpt-4o``, ``openai_compatible/llama-3.1-8b``) -> its price.
    models: dict[str, ModelPriceConfig] = field(default_factory=dict)


@dataclass(slots=True)
class TracingConfig:
    """OpenTelemetry traces (a span per request and per provider attempt, GenAI semantic conventions),
    exported over OTLP/HTTP; W3C trace context taken from the client and passed on to providers."""

    enabled: bool = False
    exporter: Literal["otlp", "console"] = "otlp"
    #: OTLP/HTTP traces endpoint (a collector, or the Datadog Agent's OTLP receiver).
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    headers: dict[str, str] = field(default_factory=dict, metadata={"secret": True})
    service_name: str = "gomodel-proxy"
    sample_ratio: float = field(default=1.0, metadata={"min": 0.0, "max": 1.0})


@dataclass(slots=True)
class DogStatsDConfig:
    """Metrics to a Datadog Agent over DogStatsD (UDP), besides ``/metrics``."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = field(default=8125, metadata={"min": 1, "max": 65535})
    prefix: str = "gomodel"
    tags: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ObservabilityConfig:
    tracing: TracingConfig = field(default_factory=TracingConfig)
    dogstatsd: DogStatsDConfig = field(default_factory=DogStatsDConfig)


@dataclass(slots=True)
class SSOConfig:
    """Sign-in to the dashboard through an OpenID Connect provider (authorization code with PKCE).

    The provider is found at ``<issuer>/.well-known/openid-configuration``; its users' groups (the
    ``groups_claim`` of the ID token, else of the userinfo answer) decide their role: any of ``admin_groups``
    admin, else any of ``read_only_groups`` read-only, else refused.
    """

    issuer: str
    client_id: str
    #: Empty: a public client (PKCE alone); otherwise sent as the token endpoint asks (basic or post).
    client_secret: str = field(default="", repr=False, metadata={"secret": True})
    #: The sign-in button's label ("Sign in with <name>").
    name: str = "SSO"
    scopes: list[str] = field(default_factory=lambda: ["openid", "profile", "email"])
    #: The claim holding the user's groups (a list of names, or one name); dotted paths reach nested claims.
    groups_claim: str = "groups"
    admin_groups: list[str] = field(default_factory=list)
    read_only_groups: list[str] = field(default_factory=list)
    #: The callback URL registered at the provider ("": derived from each request: its Host, and
    #: X-Forwarded-Proto/-Prefix as for the session cookie).
    redirect_url: str = ""
    #: The longest a call to the provider (discovery, token, keys, userinfo) may take.
    timeout_s: float = field(default=10.0, metadata={"min": 0.1, "max": 120})


@dataclass(slots=True)
class DashboardConfig:
    """The operators' dashboard (``features.admin_api`` with a master key)."""

    sso: SSOConfig | None = None


@dataclass(slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    credentials: CredentialsConfig = field(default_factory=CredentialsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    rate_limits: RateLimitsConfig = field(default_factory=RateLimitsConfig)
    budgets: BudgetsConfig = field(default_factory=BudgetsConfig)
    usage: UsageConfig = field(default_factory=UsageConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    guardrails: GuardrailsConfig = field(default_factory=GuardrailsConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    #: Aliases (``fast: groq/llama-3.3-70b-versatile``) and virtual models (``{strategy, targets}``).
    models: dict[str, str | VirtualModelConfig] = field(default_factory=dict)
    #: The failover chains' file when ``features.failover`` is on; relative to this file's folder.
    #: Empty: ``failover.yaml`` next to the main configuration (a missing default file means no chains).
    failover_file: str = ""
    #: The failover file once loaded (not a YAML key of this file).
    failover: FailoverSettings | None = field(default=None, metadata={"internal": True})
    #: Prices overriding the shipped table (``billing.pricing``).
    pricing: PricingConfig = field(default_factory=PricingConfig)
    #: The operators' dashboard: sign-in through an identity provider (``dashboard.sso``).
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    #: Where the configuration came from (for messages); not a YAML key.
    source: str = field(default="<defaults>", metadata={"internal": True})
