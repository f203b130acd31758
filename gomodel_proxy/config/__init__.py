"""Configuration: the typed schema, and the strict loader that reads it from YAML and the environment."""

from gomodel_proxy.config.loader import ConfigError, load_config
from gomodel_proxy.config.schema import (
    CacheConfig,
    Config,
    MockConfig,
    ProviderConfig,
    ServerConfig,
)

__all__ = [
    "CacheConfig",
    "Config",
    "ConfigError",
    "MockConfig",
    "ProviderConfig",
    "ServerConfig",
    "load_config",
]
