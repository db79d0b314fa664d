"""The API's JSON response class, and the error responses each route declares in the document."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from fastapi.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson (datetimes, UUIDs and dataclasses included)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


# What each error status means on this API; the codes a route can answer with are listed with it.
MEANING = {
    400: "The body is not what the declared media type says (not JSON, not UTF-8).",
    401: "No valid bearer token in the Authorization header.",
    403: "The token's role may not call this endpoint (`forbidden`), or the command is outside "
    "the principal's scope (`out_of_scope`: another station, commune, device or operator), or "
    "a reviewer decides a registration it took (`own_registration`); nothing is recorded.",
    404: "What the request names does not exist.",
    409: "Refused by the citizen's history or by an earlier command with the same command_id; "
    "nothing is recorded. `error.state` holds the account's current state when a rule refused.",
    410: "Retired endpoint: the message names the replacement.",
    413: "The body is larger than 8 MiB.",
    422: "A field breaks a rule. `invalid_request`: a rule this document states (type, pattern, "
    "format, enum, range, required, unknown field); the other codes: a rule it can only "
    "describe (see the field and endpoint descriptions). `fields` names each offending field.",
    429: "Too many commands from this principal: retry after `Retry-After` seconds; nothing is "
    "recorded.",
    500: "An internal fault, never the request's: retry (a command resent with its command_id "
    "is safe).",
}

RETRY_AFTER = {"headers": {"Retry-After": {"description": "seconds to wait",
                                            "schema": {"type": "integer"}}}}  # fmt: skip

# Every rule a command can break against the citizen's history (domain.RuleViolationError) and
# the command-id and concurrency refusals beside them.
RULE_CODES = (
    "one_open_registration",
    "activation_requires_approval",
    "invalid_transition",
    "citizen_deceased",
    "citizen_not_present",
    "account_revoked",
    "personal_data_erased",
    "command_id_reused",
    "concurrent_update",
)
# The refusals that mean "the request breaks a rule the document states": a request valid by
# the document must never get them (the contract fuzzer checks this).
SCHEMA_CODES = frozenset({"invalid_request", "malformed_json"})


def error_schema(codes: Iterable[str]) -> dict[str, Any]:
    """The JSON schema of the error body `{"error": {"code", "message", "fields"}}`."""
    return {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "fields"],
                "properties": {
                    "code": {"type": "string", "enum": sorted(set(codes))},
                    "message": {"type": "string"},
                    "fields": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "offending field (dotted path) -> what is wrong with it",
                    },
                    "state": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "409 of a rule: the account's current state",
                    },
                },
            }
        },
    }


def errors(
    codes: Mapping[int, Iterable[str]] | None = None,
    *,
    roles: bool = True,
    body: bool = False,
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: every error status it can answer, each with the error
    body's schema and the codes it can carry. `roles`: behind a bearer token (401, 403);
    `body`: takes a JSON body (400 malformed, 413 too large, 422 invalid_request)."""
    declared: dict[int, set[str]] = {500: {"internal_error"}}
    if roles:
        declared[401], declared[403] = {"unauthenticated"}, {"forbidden"}
    if body:
        declared[400], declared[413] = {"malformed_json"}, {"body_too_large"}
        declared[422] = {"invalid_request"}
    for status, extra in (codes or {}).items():
        declared.setdefault(status, set()).update(extra)
    return {
        status: {
            "description": f"{MEANING[status]} Codes: {', '.join(sorted(found))}.",
            "content": {"application/json": {"schema": error_schema(found)}},
            **(RETRY_AFTER if status == 429 else {}),
        }
        for status, found in sorted(declared.items())
    }
