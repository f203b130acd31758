"""Where providers' API keys come from (``credentials.source``): the environment, a YAML file, PostgreSQL
(encrypted at rest) or HashiCorp Vault; ``CredentialManager`` loads them at start and reloads them live."""

from gomodel_proxy.credentials.interface import CredentialError, CredentialStore
from gomodel_proxy.credentials.manager import CredentialManager, build_store

__all__ = ["CredentialError", "CredentialManager", "CredentialStore", "build_store"]
