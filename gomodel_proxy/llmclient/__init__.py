"""The base LLM HTTP client (the architecture's "llmclient"): keyring, retries and circuit breakers.

``LLMClient`` wraps the gateway's ``HttpClient`` for one provider; every remote provider sends through one
(``providers.http.make_llm_client``). ``metrics.ResilienceCollector`` exports the keys' and breakers' state.
"""

from gomodel_proxy.llmclient.breaker import CircuitBreaker
from gomodel_proxy.llmclient.client import CircuitOpenError, LLMClient
from gomodel_proxy.llmclient.keyring import BEARER, AuthScheme, Key, Keyring, charge_usage, fingerprint
from gomodel_proxy.llmclient.retry import RetryPolicy, retry_after_s

__all__ = [
    "BEARER",
    "AuthScheme",
    "CircuitBreaker",
    "CircuitOpenError",
    "Key",
    "Keyring",
    "LLMClient",
    "RetryPolicy",
    "charge_usage",
    "fingerprint",
    "retry_after_s",
]
