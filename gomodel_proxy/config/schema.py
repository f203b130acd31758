"""The configuration schema: plain dataclasses whose fields are the accepted keys.

The loader validates YAML against these types, so a key or value the schema does not name is refused
at start-up. ``Literal`` fields list the values that work in this version; ``help`` metadata is the
hint printed next to an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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

    middleware: bool = True
    guardrails: bool = True
    audit_logging: bool = False
    admin_api: bool = False
    failover: bool = True


@dataclass(slots=True)
class MockConfig:
    """Behaviour of a ``type: mock`` provider: deterministic answers, no network."""

    latency_ms: float = field(default=0.0, metadata={"min": 0})
    chunk_delay_ms: float = field(default=0.0, metadata={"min": 0})
    tokens_per_chunk: int = field(default=1, metadata={"min": 1})
    completion_tokens: int = field(default=16, metadata={"min": 0})
    embedding_dimensions: int = field(default=8, metadata={"min": 1, "max": 8192})


@dataclass(slots=True)
class ProviderConfig:
    type: ProviderType
    base_url: str = ""
    api_key: str = field(default="", metadata={"secret": True})
    api_keys: list[str] = field(default_factory=list, metadata={"secret": True})
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
    mock: MockConfig | None = None


@dataclass(slots=True)
class CredentialsConfig:
    source: Literal["env"] = "env"


@dataclass(slots=True)
class CacheConfig:
    backend: Literal["local"] = "local"
    dir: str = ".cache/gomodel-proxy"
    model_refresh_s: float = field(default=3600.0, metadata={"min": 1})
    model_fetch_timeout_s: float = field(default=5.0, metadata={"min": 0.01})


@dataclass(slots=True)
class AuditConfig:
    backend: Literal["noop"] = "noop"


@dataclass(slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    credentials: CredentialsConfig = field(default_factory=CredentialsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    #: Where the configuration came from (for messages); not a YAML key.
    source: str = field(default="<defaults>", metadata={"internal": True})
