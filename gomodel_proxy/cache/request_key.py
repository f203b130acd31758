"""Exact-match cache keys: one request, written any way, hashes to one key; different answers never share one.

Choices, each erring towards a missed hit rather than a wrong hit:

* The key is ``"<api>:<hex sha-256>"``. The hash covers ``["v1", api, namespace, body]`` serialised by orjson
  with sorted keys, so JSON whitespace and key order are irrelevant, and because the parts are a JSON array
  no namespace string can be crafted to collide with another namespace's key. ``v1`` is bumped whenever these
  rules change, which turns every old key into a miss rather than a wrong hit.
* The namespace (API key id, team id or ``"global"``) is hashed in, so two tenants never share an answer.
* ``model`` is hashed as given: the caller passes the body after model resolution, so aliases of one model share.
* Dropped because the answer's content does not depend on them (:data:`IGNORED_FIELDS`): ``stream`` and
  ``stream_options`` (the streamed and non-streamed forms of one request share a key; the cache replays either
  form), ``user``, ``safety_identifier``, ``metadata``, ``prompt_cache_key``, ``prompt_cache_retention``
  (labels and provider-side prompt caching hints), ``service_tier`` (latency and price, not content; a cached
  answer costs nothing upstream anyway), and :data:`GATEWAY_FIELDS`, the gateway's own controls.
* ``store`` is dropped for chat and messages (it only files the exchange upstream) but kept for ``responses``:
  there the returned id is what a later ``previous_response_id`` refers to, so an answer first produced with
  ``store: false`` must not be replayed to a caller asking to store it.
* Everything else is kept, known or not: ``messages``/``input``, ``tools``, ``tool_choice``, ``response_format``,
  ``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``stop``, ``n``, ``logprobs``, ... An unknown field is
  assumed to change the answer.
* Numbers are hashed as given: ``1`` and ``1.0`` differ, and an absent field differs from its default value.
  Normalising defaults would need per-provider knowledge that the key should not carry.
* Sampling (``temperature`` > 0, ``n`` > 1) does not prevent caching: whoever enables the cache for a route
  accepts that one sample, or one set of ``n`` samples, is replayed.
* Not cacheable (:func:`uncacheable_reason` says why, :func:`cache_key` returns ``None``): a body without a
  string ``model``; a ``responses`` request with ``background`` set (the answer is a job polled later) or with a
  ``conversation`` (mutable server-side state that the body does not show); a body orjson cannot serialise
  (non-string keys, integers over 64 bits), which never comes from parsed JSON.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson

from gomodel_proxy.core.types import Principal

Api = Literal["chat", "responses", "messages"]

#: Bumped whenever the normalisation rules change, so that old keys miss instead of matching wrongly.
KEY_VERSION = "v1"

#: Fields of the gateway itself, never sent upstream; they choose whether to cache, not what is answered.
GATEWAY_FIELDS = frozenset({"cache"})

#: Fields that do not change the content of the answer, dropped from the key for every api.
IGNORED_FIELDS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "safety_identifier",
        "metadata",
        "prompt_cache_key",
        "prompt_cache_retention",
        "service_tier",
    }
    | GATEWAY_FIELDS
)


def uncacheable_reason(api: Api, body: dict[str, Any]) -> str | None:
    """Why this request must never be answered from the cache, or ``None`` when it may be."""
    if not isinstance(body.get("model"), str):
        return "no resolved model"
    if api == "responses":
        if body.get("background"):
            return "background responses are polled later"
        if body.get("conversation") is not None:
            return "a conversation is server-side state"
    return None


def cacheable(api: Api, body: dict[str, Any]) -> bool:
    """Whether the request may be answered from, and stored in, the cache."""
    return uncacheable_reason(api, body) is None


def _ignored(api: Api, field: str) -> bool:
    """``store`` matters only where the answer's id can be referred to later (see the module docstring)."""
    if field == "store":
        return api != "responses"
    return field in IGNORED_FIELDS


def cache_key(api: Api, body: dict[str, Any], *, namespace: str) -> str | None:
    """The exact-match key of a request in a tenant's namespace, or ``None`` when it must not be cached."""
    if uncacheable_reason(api, body) is not None:
        return None
    kept = {field: value for field, value in body.items() if not _ignored(api, field)}
    try:
        canonical = orjson.dumps([KEY_VERSION, api, namespace, kept], option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    return f"{api}:{hashlib.sha256(canonical).hexdigest()}"


def namespace_of(principal: Principal, mode: str) -> str:
    """Whose answers a request may read (``mode`` ``tenant``): its team's, else its key's (or user's), else
    everyone's; ``global`` shares them all."""
    if mode == "global":
        return "global"
    if principal.team_id:
        return f"team:{principal.team_id}"
    if principal.key_id:
        return f"key:{principal.key_id}"
    if principal.user_id:
        return f"user:{principal.user_id}"
    return "global"
