"""The admin API's OpenAPI 3.1 document, as a Python dict.

It is the contract twice over: ``GET /admin/openapi.json`` serves it, and the handlers validate every
body and query against its ``components.schemas`` (``routes.py`` compiles them with fastjsonschema), so
the document cannot drift from what the server accepts. A schemathesis run checks the other half (what
the server answers).

Schemas use only what both JSON Schema draft 7 (fastjsonschema) and 2020-12 (OpenAPI 3.1) read alike.
"""

from __future__ import annotations

import copy
from typing import Any

INT32_MAX = 2_147_483_647
#: The most a budget may be (USD); far above any real one, low enough to stay exact as a double.
MAX_BUDGET_USD = 1e12

#: Free text: no NUL (PostgreSQL cannot store it).
_TEXT_PATTERN = "^[^\\u0000]*$"
#: Ids a client chooses (teams, users): what fits a URL segment and a budget id unescaped.
ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
SUBJECT_ID = {"type": "string", "pattern": ID_PATTERN, "maxLength": 64}


def _text(max_length: int, *, nullable: bool = False, min_length: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": ["string", "null"] if nullable else "string",
        "maxLength": max_length,
        "pattern": _TEXT_PATTERN,
    }
    if min_length:
        schema["minLength"] = min_length
    return schema


_LIMIT = {
    "type": ["integer", "null"],
    "minimum": 0,
    "maximum": INT32_MAX,
    "description": "Per minute; null: none of its own (the defaults apply).",
}
_TIME = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC ('Z') in answers."}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_METADATA = {
    "type": "object",
    "description": "Free labels: flat string, number, boolean or null values.",
    "maxProperties": 64,
    "propertyNames": {"maxLength": 128, "pattern": _TEXT_PATTERN},
    "additionalProperties": {
        "anyOf": [
            {"type": "string", "maxLength": 1024, "pattern": _TEXT_PATTERN},
            {"type": "number", "minimum": -1e15, "maximum": 1e15},
            {"type": "boolean"},
            {"type": "null"},
        ]
    },
}
_ALLOWED_MODELS = {
    "type": ["array", "null"],
    "description": "Model ids or fnmatch patterns ('openai/*') the key may use; null: every model.",
    "maxItems": 256,
    "items": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": _TEXT_PATTERN},
}
_PERIOD = {"type": "string", "enum": ["daily", "weekly", "monthly", "total"]}
_MAX_BUDGET = {"type": "number", "minimum": 0, "maximum": MAX_BUDGET_USD, "description": "USD per period."}
_REF_ID = {"type": ["string", "null"], "maxLength": 64, "pattern": _TEXT_PATTERN}
_GROUP_NAMES = "(key|user|team|model|provider|day)"
_DAY_OR_TIME = {
    "type": "string",
    "anyOf": [{"format": "date-time"}, {"format": "date"}],
    "description": "RFC 3339 date-time, or YYYY-MM-DD (midnight UTC).",
}


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required if required is not None else list(properties),
        "additionalProperties": False,
    }


def _list_of(ref: str) -> dict[str, Any]:
    return _obj({"object": {"type": "string", "const": "list"}, "data": {"type": "array", "items": {"$ref": ref}}})


_KEY_PROPS: dict[str, Any] = {
    "id": {"type": "string"},
    "key_prefix": {"type": "string", "description": "The key's first 12 characters (the key is never shown again)."},
    "name": {"type": ["string", "null"]},
    "user_id": {"type": ["string", "null"]},
    "team_id": {"type": ["string", "null"]},
    "is_admin": {"type": "boolean"},
    "allowed_models": {"type": ["array", "null"], "items": {"type": "string"}},
    "rpm": {"type": ["integer", "null"]},
    "tpm": {"type": ["integer", "null"]},
    "expires_at": _TIME_OR_NULL,
    "revoked_at": _TIME_OR_NULL,
    "metadata": {"type": "object"},
    "created_at": _TIME,
    "updated_at": _TIME,
}
_BUDGET_PROPS: dict[str, Any] = {
    "id": {"type": "string"},
    "scope": {"type": "string", "enum": ["key", "user", "team", "global"]},
    "subject_id": {"type": "string"},
    "max_budget": {"type": "number"},
    "period": _PERIOD,
    "created_at": _TIME,
    "updated_at": _TIME,
}
_USAGE_FILTERS: dict[str, Any] = {
    name: _text(255, min_length=1) for name in ("key", "user", "team", "model", "provider")
}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({
        "error": _obj({
            "message": {"type": "string"},
            "type": {"type": "string"},
            "param": {"type": ["string", "null"]},
            "code": {"type": ["string", "null"]},
        })
    }),
    # -- teams
    "Team": _obj({
        "id": {"type": "string"},
        "name": {"type": "string"},
        "rpm": {"type": ["integer", "null"]},
        "tpm": {"type": ["integer", "null"]},
        "metadata": {"type": "object"},
        "created_at": _TIME,
        "updated_at": _TIME,
    }),
    "TeamCreate": _obj(
        {"id": SUBJECT_ID, "name": _text(255, min_length=1), "rpm": _LIMIT, "tpm": _LIMIT, "metadata": _METADATA},
        ["name"],
    ),
    "TeamUpdate": _obj({"name": _text(255, min_length=1), "rpm": _LIMIT, "tpm": _LIMIT, "metadata": _METADATA}, []),
    "TeamList": _list_of("#/components/schemas/Team"),
    # -- users
    "User": _obj({
        "id": {"type": "string"},
        "email": {"type": ["string", "null"]},
        "name": {"type": ["string", "null"]},
        "team_id": {"type": ["string", "null"]},
        "is_admin": {"type": "boolean"},
        "rpm": {"type": ["integer", "null"]},
        "tpm": {"type": ["integer", "null"]},
        "metadata": {"type": "object"},
        "created_at": _TIME,
        "updated_at": _TIME,
    }),
    "UserCreate": _obj(
        {
            "id": SUBJECT_ID,
            "email": _text(320, nullable=True),
            "name": _text(255, nullable=True),
            "team_id": _REF_ID,
            "is_admin": {"type": "boolean"},
            "rpm": _LIMIT,
            "tpm": _LIMIT,
            "metadata": _METADATA,
        },
        [],
    ),
    "UserUpdate": _obj(
        {
            "email": _text(320, nullable=True),
            "name": _text(255, nullable=True),
            "team_id": _REF_ID,
            "is_admin": {"type": "boolean"},
            "rpm": _LIMIT,
            "tpm": _LIMIT,
            "metadata": _METADATA,
        },
        [],
    ),
    "UserList": _list_of("#/components/schemas/User"),
    # -- keys
    "Key": _obj(_KEY_PROPS),
    "KeyCreated": _obj({
        **_KEY_PROPS,
        "key": {"type": "string", "description": "The key itself: shown in this answer only, store it now."},
        "budget": {"anyOf": [{"$ref": "#/components/schemas/Budget"}, {"type": "null"}]},
    }),
    "KeyCreate": _obj(
        {
            "name": _text(255, nullable=True),
            "user_id": _REF_ID,
            "team_id": _REF_ID,
            "is_admin": {"type": "boolean"},
            "allowed_models": _ALLOWED_MODELS,
            "rpm": _LIMIT,
            "tpm": _LIMIT,
            "expires_at": _TIME_OR_NULL,
            "metadata": _METADATA,
            "max_budget": {**_MAX_BUDGET, "description": "Creates the budget 'key:<id>' (USD per budget_period)."},
            "budget_period": {**_PERIOD, "description": "With max_budget (default monthly); ignored without it."},
        },
        [],
    ),
    "KeyUpdate": _obj(
        {
            "name": _text(255, nullable=True),
            "user_id": _REF_ID,
            "team_id": _REF_ID,
            "is_admin": {"type": "boolean"},
            "allowed_models": _ALLOWED_MODELS,
            "rpm": _LIMIT,
            "tpm": _LIMIT,
            "expires_at": _TIME_OR_NULL,
            "metadata": _METADATA,
        },
        [],
    ),
    "KeyList": _list_of("#/components/schemas/Key"),
    "KeyListQuery": _obj(
        {
            "user_id": _text(64, min_length=1),
            "team_id": _text(64, min_length=1),
            "include_revoked": {"type": "boolean", "default": False},
        },
        [],
    ),
    # -- budgets
    "Budget": _obj(_BUDGET_PROPS),
    "BudgetPut": _obj({"max_budget": _MAX_BUDGET, "period": _PERIOD}),
    "BudgetList": _list_of("#/components/schemas/Budget"),
    # -- rate limits
    "RateLimitPair": _obj({
        "rpm": {"type": "integer", "minimum": 0, "description": "0: no limit"},
        "tpm": {"type": "integer", "minimum": 0, "description": "0: no limit"},
    }),
    "RateLimit": _obj({
        "scope": {"type": "string", "enum": ["key", "user", "team"]},
        "subject_id": {"type": "string"},
        "rpm": {"type": ["integer", "null"]},
        "tpm": {"type": ["integer", "null"]},
    }),
    "RateLimitPut": _obj({"rpm": _LIMIT, "tpm": _LIMIT}),
    "RateLimits": _obj({
        "object": {"type": "string", "const": "rate_limits"},
        "global": {"$ref": "#/components/schemas/RateLimitPair"},
        "default_key": {"$ref": "#/components/schemas/RateLimitPair"},
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/RateLimit"}},
    }),
    # -- usage
    "UsageQuery": _obj(
        {
            "start": _DAY_OR_TIME,
            "end": _DAY_OR_TIME,
            "group_by": {
                "type": "string",
                "pattern": f"^({_GROUP_NAMES}(,{_GROUP_NAMES})*)?$",
                "description": "Comma-separated: key, user, team, model, provider, day (default: model).",
            },
            **_USAGE_FILTERS,
            "format": {"type": "string", "enum": ["json", "csv"], "default": "json"},
        },
        [],
    ),
    "UsageRecordsQuery": _obj(
        {
            "start": _DAY_OR_TIME,
            "end": _DAY_OR_TIME,
            **_USAGE_FILTERS,
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
            "offset": {"type": "integer", "minimum": 0, "maximum": INT32_MAX, "default": 0},
        },
        [],
    ),
    "UsageRow": {
        "type": "object",
        "description": "The group columns asked for (key_id, user_id, team_id, model, provider, day), then figures.",
        "properties": {
            "key_id": {"type": ["string", "null"]},
            "user_id": {"type": ["string", "null"]},
            "team_id": {"type": ["string", "null"]},
            "model": {"type": ["string", "null"]},
            "provider": {"type": ["string", "null"]},
            "day": {"type": ["string", "null"]},
            "requests": {"type": "integer"},
            "input_tokens": {"type": "integer"},
            "output_tokens": {"type": "integer"},
            "cached_tokens": {"type": "integer"},
            "reasoning_tokens": {"type": "integer"},
            "cost": {"type": "number"},
            "errors": {"type": "integer"},
        },
        "required": [
            "requests", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cost", "errors",
        ],
        "additionalProperties": False,
    },
    "UsageReport": _obj({
        "object": {"type": "string", "const": "usage_report"},
        "start": _TIME,
        "end": _TIME,
        "group_by": {"type": "array", "items": {"type": "string"}},
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/UsageRow"}},
    }),
    "UsageRecord": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "request_id": {"type": "string"},
            "created_at": _TIME,
            "key_id": {"type": ["string", "null"]},
            "user_id": {"type": ["string", "null"]},
            "team_id": {"type": ["string", "null"]},
            "provider": {"type": "string"},
            "model": {"type": "string"},
            "status": {"type": "integer"},
            "cost": {"type": "number"},
        },
        "required": ["id", "request_id", "created_at", "provider", "model", "status", "cost"],
    },
    "UsageTimeseriesQuery": _obj(
        {
            "start": _DAY_OR_TIME,
            "end": _DAY_OR_TIME,
            "bucket": {
                "type": "string",
                "enum": ["minute", "hour", "day"],
                "description": "Default: minute for a period up to 6 h, hour up to 21 days, day beyond "
                               "(at most ~500 points).",
            },
            **_USAGE_FILTERS,
        },
        [],
    ),
    "UsagePoint": _obj({
        "t": {**_TIME, "description": "The start of the bucket (UTC)."},
        "requests": {"type": "integer"},
        "errors": {
            "type": "integer",
            "description": "Records with status >= 400, or an outcome other than ok and cached (e.g. a stream "
                           "that failed after its 200).",
        },
        "input_tokens": {"type": "integer"},
        "output_tokens": {"type": "integer"},
        "cost_usd": {"type": "string", "pattern": "^-?[0-9]+\\.[0-9]{9}$", "description": "USD, to 1e-9."},
        "latency_ms_p50": {"type": "number", "description": "Nearest rank: the smallest value with at least "
                                                             "50% of the bucket's records at or below it."},
        "latency_ms_p99": {"type": "number", "description": "Nearest rank, as latency_ms_p50."},
        "ttfb_ms_p50": {"type": ["number", "null"],
                        "description": "Nearest rank over the records that have a ttfb; null: none has."},
        "ttfb_ms_p99": {"type": ["number", "null"], "description": "As ttfb_ms_p50."},
    }),
    "UsageTimeseries": _obj({
        "object": {"type": "string", "const": "usage_timeseries"},
        "start": _TIME,
        "end": _TIME,
        "bucket": {"type": "string", "enum": ["minute", "hour", "day"]},
        "points": {
            "type": "array",
            "description": "Buckets holding records only, ascending.",
            "items": {"$ref": "#/components/schemas/UsagePoint"},
        },
    }),
    "UsageRecordList": _obj({
        "object": {"type": "string", "const": "list"},
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/UsageRecord"}},
        "limit": {"type": "integer"},
        "offset": {"type": "integer"},
    }),
}


# -- paths ----------------------------------------------------------------------------------------
def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    names = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict"}
    return {str(s): {"$ref": f"#/components/responses/{names[s]}"} for s in sorted({401, 403, *statuses})}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _path_param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name, "in": "path", "required": True, "description": description,
        "schema": schema or {"type": "string"},
    }


def query_parameters(schema_name: str) -> list[dict[str, Any]]:
    """The query parameters of an operation: one per property of the component ``schema_name``."""
    props = SCHEMAS[schema_name]["properties"]
    return [
        {"name": name, "in": "query", "required": False, "schema": copy.deepcopy(prop)}
        for name, prop in props.items()
    ]


def _op(op_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"operationId": op_id, "summary": summary, "tags": ["admin"], "responses": responses, **extra}


#: A budget's id: its scope and subject (``parse_budget_id`` in the repository reads it).
BUDGET_ID_PATTERN = "^(global|(key|user|team):" + ID_PATTERN.strip("^$") + ")$"
_TEAM_ID = _path_param("team_id", "The team's id.", SUBJECT_ID)
_USER_ID = _path_param("user_id", "The user's id.", SUBJECT_ID)
_KEY_ID = _path_param("key_id", "The key's id (k_...), not the key.", SUBJECT_ID)
_BUDGET_ID = _path_param(
    "budget_id", "'key:<id>', 'user:<id>', 'team:<id>' or 'global'.",
    {"type": "string", "pattern": BUDGET_ID_PATTERN, "maxLength": 70},
)

PATHS: dict[str, Any] = {
    "/admin/teams": {
        "get": _op("listTeams", "Every team.", {"200": _json("TeamList", "The teams."), **_errors()}),
        "post": _op(
            "createTeam", "Create a team.",
            {"201": _json("Team", "The team created."), **_errors(400, 409)},
            requestBody=_body("TeamCreate"),
        ),
    },
    "/admin/teams/{team_id}": {
        "parameters": [_TEAM_ID],
        "get": _op("getTeam", "One team.", {"200": _json("Team", "The team."), **_errors(404)}),
        "patch": _op(
            "updateTeam", "Change a team's fields (those given).",
            {"200": _json("Team", "The team as changed."), **_errors(400, 404, 409)},
            requestBody=_body("TeamUpdate"),
        ),
        "delete": _op(
            "deleteTeam", "Delete a team (its users and keys lose it; its budget goes).",
            {"200": _json("Team", "The team deleted."), **_errors(404)},
        ),
    },
    "/admin/users": {
        "get": _op("listUsers", "Every user.", {"200": _json("UserList", "The users."), **_errors()}),
        "post": _op(
            "createUser", "Create a user.",
            {"201": _json("User", "The user created."), **_errors(400, 409)},
            requestBody=_body("UserCreate"),
        ),
    },
    "/admin/users/{user_id}": {
        "parameters": [_USER_ID],
        "get": _op("getUser", "One user.", {"200": _json("User", "The user."), **_errors(404)}),
        "patch": _op(
            "updateUser", "Change a user's fields (those given).",
            {"200": _json("User", "The user as changed."), **_errors(400, 404, 409)},
            requestBody=_body("UserUpdate"),
        ),
        "delete": _op(
            "deleteUser", "Delete a user (its keys lose it; its budget goes).",
            {"200": _json("User", "The user deleted."), **_errors(404)},
        ),
    },
    "/admin/keys": {
        "get": _op(
            "listKeys", "Keys (their prefixes, never the keys).",
            {"200": _json("KeyList", "The keys."), **_errors(400)},
            parameters=query_parameters("KeyListQuery"),
        ),
        "post": _op(
            "createKey", "Create a key: the answer is the only time the key is shown.",
            {"201": _json("KeyCreated", "The key and its record."), **_errors(400)},
            requestBody=_body("KeyCreate"),
        ),
    },
    "/admin/keys/{key_id}": {
        "parameters": [_KEY_ID],
        "get": _op("getKey", "One key's record.", {"200": _json("Key", "The key's record."), **_errors(404)}),
        "patch": _op(
            "updateKey", "Change a key's fields (those given).",
            {"200": _json("Key", "The record as changed."), **_errors(400, 404)},
            requestBody=_body("KeyUpdate"),
        ),
        "delete": _op(
            "revokeKey", "Revoke a key (idempotent).",
            {"200": _json("Key", "The revoked key's record."), **_errors(404)},
        ),
    },
    "/admin/budgets": {
        "get": _op("listBudgets", "Every budget.", {"200": _json("BudgetList", "The budgets."), **_errors()}),
    },
    "/admin/budgets/{budget_id}": {
        "parameters": [_BUDGET_ID],
        "get": _op("getBudget", "One budget.", {"200": _json("Budget", "The budget."), **_errors(404)}),
        "put": _op(
            "putBudget", "Create or replace a budget (its key, user or team must exist).",
            {
                "200": _json("Budget", "The budget replaced."),
                "201": _json("Budget", "The budget created."),
                **_errors(400, 409),
            },
            requestBody=_body("BudgetPut"),
        ),
        "delete": _op("deleteBudget", "Delete a budget.", {"200": _json("Budget", "The budget deleted."),
                                                            **_errors(404)}),
    },
    "/admin/rate-limits": {
        "get": _op(
            "listRateLimits", "The configured global and default-key limits, and every subject's own.",
            {"200": _json("RateLimits", "The limits."), **_errors()},
        ),
    },
    "/admin/rate-limits/{scope}/{subject_id}": {
        "parameters": [
            _path_param("scope", "What the limit applies to.", {"type": "string", "enum": ["key", "user", "team"]}),
            _path_param("subject_id", "The key, user or team id.", SUBJECT_ID),
        ],
        "put": _op(
            "putRateLimit", "Set a key's, user's or team's own rpm/tpm (null clears).",
            {"200": _json("RateLimit", "The subject's limits."), **_errors(400, 404)},
            requestBody=_body("RateLimitPut"),
        ),
    },
    "/admin/usage": {
        "get": _op(
            "usageReport", "Usage grouped (JSON or CSV); the period defaults to the current month (UTC).",
            {
                "200": {
                    "description": "The report.",
                    "content": {
                        "application/json": {"schema": _ref("UsageReport")},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                **_errors(400),
            },
            parameters=query_parameters("UsageQuery"),
        ),
    },
    "/admin/usage/records": {
        "get": _op(
            "usageRecords", "The usage records themselves, newest first.",
            {"200": _json("UsageRecordList", "The records."), **_errors(400)},
            parameters=query_parameters("UsageRecordsQuery"),
        ),
    },
    "/admin/usage/timeseries": {
        "get": _op(
            "usageTimeseries",
            "Usage per minute, hour or day: requests, errors, tokens, cost, latency and ttfb p50/p99; the "
            "period defaults to the current month (UTC).",
            {"200": _json("UsageTimeseries", "The points."), **_errors(400)},
            parameters=query_parameters("UsageTimeseriesQuery"),
        ),
    },
    "/admin/openapi.json": {
        "get": _op(
            "openapi", "This document.",
            {"200": {"description": "OpenAPI 3.1.", "content": {"application/json": {"schema": {"type": "object"}}}},
             **_errors()},
        ),
    },
}


# -- credentials (gomodel_proxy.admin.credentials_routes) ---------------------------------------------
SCHEMAS["CredentialsProvider"] = {
    "type": "object",
    "properties": {
        "provider": {"type": "string"},
        "keys": {"type": "integer", "description": "How many keys the provider sends with now."},
        "fingerprints": {"type": "array", "items": {"type": "string"},
                         "description": "First 8 hex digits of each key's SHA-256 (never the keys)."},
        "added": {"type": "array", "items": {"type": "string"}},
        "removed": {"type": "array", "items": {"type": "string"}},
        "error": {"type": ["string", "null"], "description": "Why the reload failed (the keys were kept)."},
    },
    "required": ["provider", "keys", "fingerprints", "added", "removed", "error"],
}
SCHEMAS["CredentialsReload"] = _obj({
    "object": {"type": "string", "const": "credentials_reload"},
    "source": {"type": "string", "enum": ["env", "file", "postgres", "vault"]},
    "ok": {"type": "boolean"},
    "providers": {"type": "array", "items": {"$ref": "#/components/schemas/CredentialsProvider"}},
})
PATHS["/admin/credentials/reload"] = {
    "post": _op(
        "reloadCredentials",
        "Read providers' keys from the credential store again; the next request uses them.",
        {"200": _json("CredentialsReload", "Each provider's key fingerprints after the reload."), **_errors()},
    ),
}

# -- configuration reload (gomodel_proxy.admin.reload_routes) -------------------------------------------
#: ``POST /admin/reload``: served by every gateway (no database needed), not by ``admin.routes``.
SCHEMAS["ReloadResult"] = {
    "type": "object",
    "required": ["status", "trigger", "changed", "needs_restart", "problems"],
    "properties": {
        "status": {"type": "string", "enum": ["applied", "unchanged", "refused"]},
        "trigger": {"type": "string"},
        "changed": {"type": "array", "items": {"type": "string"}, "description": "Keys applied live."},
        "needs_restart": {"type": "array", "items": {"type": "string"},
                          "description": "Keys that changed but need a restart (ignored until then)."},
        "problems": {"type": "array", "items": {"type": "string"},
                     "description": "Why the files were refused, each with its file:line:col."},
        "credentials": {"type": "string", "description": "The providers' keys: reloaded, or failed: <why>."},
        "error": {"type": "object", "description": "When refused: the problems, in OpenAI's error shape."},
    },
}
PATHS["/admin/reload"] = {
    "post": _op(
        "reloadConfig",
        "Reload the configuration, the failover and the guardrails files (as SIGHUP does). Aliases, virtual "
        "models, failover chains, guardrails, rate limits, cache TTLs and the log level change live; other keys "
        "are listed as needing a restart. A file with a problem is refused and the running configuration kept.",
        {
            "200": _json("ReloadResult", "Applied (or nothing to apply)."),
            "422": _json("ReloadResult", "Refused: the problems; nothing changed."),
            **_errors(),
        },
    ),
}

# -- audit trail (gomodel_proxy.admin.audit_routes) -----------------------------------------------------
SCHEMAS["AuditQuery"] = _obj(
    {
        "start": {**_DAY_OR_TIME, "description": "Entries from this time on (inclusive)."},
        "end": {**_DAY_OR_TIME, "description": "Entries before this time (exclusive)."},
        "key_id": _text(64, min_length=1),
        "model": {**_text(255, min_length=1), "description": "The model asked for, or the model that answered."},
        "status": {"type": "integer", "minimum": 0, "maximum": 999},
        "kind": {"type": "string", "enum": ["request", "attempt", "step", "response"]},
        "request_id": _text(128, min_length=1),
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        "cursor": {"type": "string", "maxLength": 512, "pattern": "^[A-Za-z0-9_-]*$",
                   "description": "The previous page's next_cursor."},
    },
    [],
)
SCHEMAS["AuditEntry"] = {
    "type": "object",
    "description": "One entry (kind request, attempt, step or response); secrets are never in it.",
    "required": ["id", "kind", "ts", "time"],
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string"},
        "ts": {"type": "number", "description": "Epoch seconds."},
        "time": {"type": "string"},
        "request_id": {"type": ["string", "null"]},
        "key_id": {"type": ["string", "null"]},
        "model_requested": {"type": ["string", "null"]},
        "model": {"type": ["string", "null"]},
        "provider": {"type": ["string", "null"]},
        "status": {"type": ["integer", "null"]},
    },
}
SCHEMAS["AuditList"] = _obj({
    "object": {"type": "string", "const": "list"},
    "data": {"type": "array", "items": _ref("AuditEntry")},
    "limit": {"type": "integer"},
    "has_more": {"type": "boolean"},
    "next_cursor": {"type": ["string", "null"]},
})
PATHS["/admin/audit"] = {
    "get": _op(
        "auditEntries",
        "The audit trail (file or postgres store), newest first, a page at a time (cursor).",
        {"200": _json("AuditList", "The entries."), **_errors(400, 404)},
        parameters=query_parameters("AuditQuery"),
    ),
}

# -- the gateway's state (gomodel_proxy.admin.state_routes) ------------------------------------------------------
#: Served by every gateway with the admin API and a master key (no database needed). Times are RFC 3339 (UTC);
#: keys appear only as fingerprints (the first 8 hex digits of their SHA-256).
_MONEY = {"type": ["string", "null"], "pattern": "^-?[0-9]+(\\.[0-9]+)?$",
          "description": "USD as a decimal string; null when unknown."}
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}
SCHEMAS["Breaker"] = {
    "type": "object",
    "required": ["state", "enabled", "failures", "retry_at"],
    "properties": {
        "state": {"type": "string", "enum": ["closed", "half_open", "open"]},
        "enabled": {"type": "boolean"},
        "failures": {"type": "integer", "description": "Failures in a row within the breaker's window."},
        "failure_threshold": {"type": ["integer", "null"]},
        "opened_at": _TIME_OR_NULL,
        "retry_at": {**_TIME_OR_NULL, "description": "When an open breaker lets a probe through."},
        "transitions": {**_COUNTS, "description": "Transitions into each state since start."},
    },
}
SCHEMAS["ProviderKey"] = {
    "type": "object",
    "required": ["fingerprint", "state", "cooldown_until"],
    "properties": {
        "fingerprint": {"type": "string", "pattern": "^[0-9a-f]{8}$"},
        "state": {"type": "string", "enum": ["active", "rate_limited", "resting", "revoked", "circuit_open"],
                  "description": "resting: after a 429; rate_limited: its own rpm/tpm spent; revoked: 401/403."},
        "cooldown_until": _TIME_OR_NULL,
        "requests": {"type": "integer"},
        "failures": {**_COUNTS, "description": "Failures by reason."},
        "weight": {"type": "number"},
        "rpm": {"type": ["integer", "null"]},
        "tpm": {"type": ["integer", "null"]},
        "breaker": {"anyOf": [_ref("Breaker"), {"type": "null"}]},
    },
}
SCHEMAS["ProviderState"] = {
    "type": "object",
    "required": ["name", "type", "base_url", "breaker", "keys", "models"],
    "properties": {
        "name": {"type": "string"},
        "type": {"type": "string", "description": "The provider kind: openai, anthropic, gemini, ..."},
        "base_url": {"type": "string", "description": "Without credentials or query."},
        "available": {"type": "boolean", "description": "False: skipped at start-up (no key)."},
        "breaker": _ref("Breaker"),
        "keys": {"type": "array", "items": _ref("ProviderKey"), "description": "Empty for a keyless provider."},
        "retries": _COUNTS,
        "fast_failures": {"type": "integer", "description": "Requests refused at once by the open breaker."},
        "models": {"type": ["integer", "null"], "description": "Models the registry knows (null: not listed yet)."},
        "models_status": {"type": ["string", "null"], "enum": ["pending", "ok", "cached", "failed", None]},
    },
}
SCHEMAS["ProviderStateList"] = _obj({"object": {"type": "string", "const": "list"},
                                     "data": {"type": "array", "items": _ref("ProviderState")}})
SCHEMAS["EffectiveConfig"] = _obj({
    "object": {"type": "string", "const": "config"},
    "source": {"type": ["string", "null"], "description": "The configuration file (null: defaults only)."},
    "config": {"type": "object", "description": "The running configuration; every secret is masked ('***', "
               "providers' keys 'fp:<fingerprint>', URL passwords '***')."},
})
SCHEMAS["LiveRequestsQuery"] = _obj(
    {"backlog": {"type": "integer", "minimum": 0, "maximum": 500, "default": 50,
                 "description": "The latest finished requests sent first."}},
    [],
)
SCHEMAS["LiveRequest"] = {
    "type": "object",
    "description": "The data of an 'event: request' (never a prompt, an answer or a key).",
    "required": ["request_id", "time", "endpoint", "model", "provider", "status", "outcome", "stream",
                 "latency_ms", "ttfb_ms", "input_tokens", "output_tokens", "cost_usd", "key_id", "user_id",
                 "team_id"],
    "properties": {
        "request_id": {"type": "string"},
        "time": {**_TIME, "description": "When it finished (RFC 3339, milliseconds)."},
        "endpoint": {"type": "string"},
        "model": {"type": ["string", "null"], "description": "The model asked for."},
        "upstream_model": {"type": ["string", "null"]},
        "provider": {"type": ["string", "null"]},
        "status": {"type": "integer"},
        "outcome": {"type": "string"},
        "error_code": {"type": ["string", "null"]},
        "stream": {"type": "boolean"},
        "cached": {"type": "boolean"},
        "billable": {"type": "boolean"},
        "latency_ms": {"type": "number"},
        "ttfb_ms": {"type": ["number", "null"]},
        "input_tokens": {"type": ["integer", "null"]},
        "output_tokens": {"type": ["integer", "null"]},
        "cost_usd": _MONEY,
        "key_id": {"type": ["string", "null"]},
        "user_id": {"type": ["string", "null"]},
        "team_id": {"type": ["string", "null"]},
    },
}
_BUDGET_PROPS.update({
    "used": {**_MONEY, "description": "Spent in the current period (GET only; null: no budget ledger)."},
    "reserved": {**_MONEY, "description": "Held by calls in flight (GET only)."},
    "remaining": {**_MONEY, "description": "max_budget - used - reserved, at least 0 (GET only)."},
})  # not required: PUT and DELETE answer the record alone
PATHS["/admin/providers"] = {
    "get": _op("listProviders", "Each configured provider (configuration order): breaker, keys by fingerprint, "
               "models known.", {"200": _json("ProviderStateList", "The providers."), **_errors()}),
}
PATHS["/admin/config"] = {
    "get": _op("getConfig", "The running configuration with every secret masked.",
               {"200": _json("EffectiveConfig", "The configuration."), **_errors()}),
}
PATHS["/admin/requests/live"] = {
    "get": _op(
        "liveRequests",
        "Requests as they finish, as server-sent events: the latest `backlog` first, then each new one "
        "(`event: request`, data: a LiveRequest). A listener too slow loses the oldest and gets `event: dropped` "
        "(data `{\"count\": n}`); `: keep-alive` every 15 s; the stream ends at gateway shutdown. At most 32 "
        "listeners (503 too_many_listeners).",
        {
            "200": {"description": "The event stream.", "content": {"text/event-stream": {
                "schema": {"type": "string"}, "x-event-data": _ref("LiveRequest")}}},
            "503": {"description": "Too many listeners (code too_many_listeners), or shutting down.",
                    "content": {"application/json": {"schema": _ref("Error")}}},
            **_errors(400),
        },
        parameters=query_parameters("LiveRequestsQuery"),
    ),
}

# -- dashboard sessions (gomodel_proxy.admin.dashboard) ------------------------------------------------
#: The dashboard's sign-in: a signed, HttpOnly, SameSite=Strict cookie (``gomodel_session``, Path=/admin) that
#: then authenticates ``/admin/*`` in place of a key; a change made with it needs ``X-CSRF-Token``. Its page and
#: assets (``/admin/dashboard/``) are static files, not part of this API.
SCHEMAS["DashboardSignIn"] = _obj({"key": {"type": "string", "minLength": 1, "maxLength": 8192,
                                           "description": "The master key or an admin's virtual key."}}, ["key"])
SCHEMAS["DashboardSession"] = _obj({
    "role": {"type": "string", "enum": ["admin", "read_only"]},
    "subject": {"type": "string", "description": "'master', or the id of the key signed in with (never the key)."},
    "csrf": {"type": "string", "description": "Send it back as X-CSRF-Token with every change."},
    "issued_at": _TIME,
    "expires_at": _TIME,
})
PATHS["/admin/dashboard/session"] = {
    "post": _op(
        "dashboardSignIn",
        "Sign in to the dashboard: sets the session cookie (12 h). Needs no other credential; 403 for a valid key "
        "that is not an admin's.",
        {"200": _json("DashboardSession", "The session (its cookie in Set-Cookie)."), **_errors(400)},
        requestBody=_body("DashboardSignIn"), security=[],
    ),
    "get": _op(
        "dashboardSession", "The session of the cookie sent (401 without one).",
        {"200": _json("DashboardSession", "The session."), **_errors()},
    ),
    "delete": _op(
        "dashboardSignOut", "Sign out: clears the cookie (with the cookie, X-CSRF-Token is required).",
        {"204": {"description": "Signed out."}, **_errors()},
    ),
}

# -- dashboard SSO (gomodel_proxy.admin.dashboard, admin.oidc) ---------------------------------------------------
# Sessions of an identity provider's users carry its name and email (optional: key sessions have none).
SCHEMAS["DashboardSession"]["properties"].update({
    "name": {"type": "string", "maxLength": 200, "description": "The identity provider's name of the user (SSO)."},
    "email": {"type": "string", "maxLength": 200, "description": "The user's email at the identity provider (SSO)."},
})
SCHEMAS["DashboardSession"]["properties"]["subject"]["description"] = (
    "'master', 'key:<id>' of the key signed in with (never the key), or 'sso:<sub>' of the provider's user.")
SCHEMAS["DashboardSSO"] = _obj({
    "enabled": {"type": "boolean", "description": "Whether dashboard.sso is configured."},
    "name": {"type": ["string", "null"], "description": "The sign-in button's label (\"Sign in with <name>\")."},
    "login_url": {"type": "string", "const": "sso/login", "description": "Relative to the dashboard's page."},
})
_TOO_MANY_SIGN_INS = {
    "description": "Too many failed sign-ins from this address lately (code too_many_sign_ins); Retry-After says "
                   "when to try again.",
    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    "content": {"application/json": {"schema": _ref("Error")}},
}
_TO_THE_PAGE = {
    "description": "To the dashboard's page, relative: '../' signed in, '../#sso-error=<denied|state|failed>' "
                   "refused (denied: in none of the configured groups; state: no matching sign-in in progress, or "
                   "a replay; failed: the provider or its tokens failed).",
    "headers": {"Location": {"schema": {"type": "string"}}},
}
PATHS["/admin/dashboard/sso/login"] = {
    "get": _op(
        "dashboardSsoLogin",
        "Start signing in through the identity provider: a 302 to its authorization endpoint (code flow, PKCE "
        "S256, state and nonce), the flow in a 10-minute HttpOnly SameSite=Lax cookie on the callback's path.",
        {"302": {"description": "To the provider, or (it cannot be reached) to the page with #sso-error=failed.",
                 "headers": {"Location": {"schema": {"type": "string"}}}},
         "404": {"$ref": "#/components/responses/NotFound"}, "429": _TOO_MANY_SIGN_INS},
        security=[],
    ),
}
PATHS["/admin/dashboard/sso/callback"] = {
    "get": _op(
        "dashboardSsoCallback",
        "Where the provider sends the browser back (code and state, or error): the state checked against the flow "
        "cookie, the code exchanged, the ID token validated, the user's groups mapped to a role. Sets the session "
        "cookie on success.",
        {"302": _TO_THE_PAGE, "404": {"$ref": "#/components/responses/NotFound"}},
        parameters=[{"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
                    for name in ("code", "state", "error")],
        security=[],
    ),
}
PATHS["/admin/dashboard/sso"] = {
    "get": _op(
        "dashboardSso", "Whether the page offers \"Sign in with <name>\" (dashboard.sso), and where the link goes.",
        {"200": _json("DashboardSSO", "SSO's status.")}, security=[],
    ),
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "gomodel-proxy admin API",
        "version": "1",
        "description": "Teams, users, virtual keys, budgets, rate limits and usage. Errors take OpenAI's shape.",
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}, {"apiKey": []}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "responses": {
            "BadRequest": _error_response("The body or a query parameter is invalid (param names the field)."),
            "Unauthorized": _error_response("No valid key or token."),
            "Forbidden": _error_response("This key may not use the admin API."),
            "NotFound": _error_response("No such record."),
            "Conflict": _error_response("A record with that id, name or email exists."),
        },
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <admin key>"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        },
    },
}


def document() -> dict[str, Any]:
    """A copy of the document (callers may change theirs)."""
    return copy.deepcopy(DOCUMENT)
