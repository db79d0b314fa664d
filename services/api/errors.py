"""Errors in the contract's shape: {"error": {"code", "message", "fields"}} with a 4xx status."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from services.api.responses import OrjsonResponse
from services.registry.application import CommandReuseError, ConcurrencyError
from services.registry.commands import AccountNotFoundError, ScopeError
from services.registry.domain import RuleViolationError
from services.registry.sealing import ErasedError
from services.registry.validation import InvalidCommandError


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields = fields or {}
        self.extra = extra
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "fields": self.fields,
                **self.extra,
            }
        }


def from_domain(exc: Exception) -> ApiError:
    """The API error for an exception the registry raises on a command."""
    if isinstance(exc, InvalidCommandError):
        return ApiError(422, "invalid_command", "the command is invalid", exc.fields)
    if isinstance(exc, RuleViolationError):
        return ApiError(409, exc.rule, exc.message, state=exc.state)
    if isinstance(exc, CommandReuseError):
        return ApiError(409, "command_id_reused", str(exc), {"command_id": str(exc)})
    if isinstance(exc, AccountNotFoundError):
        return ApiError(404, "account_not_found", str(exc))
    if isinstance(exc, ConcurrencyError):
        return ApiError(409, "concurrent_update", str(exc))
    if isinstance(exc, ScopeError):
        return ApiError(403, exc.code, str(exc))
    if isinstance(exc, ErasedError):
        return ApiError(409, "personal_data_erased", str(exc))
    raise exc


DOMAIN_ERRORS = (
    InvalidCommandError,
    RuleViolationError,
    CommandReuseError,
    AccountNotFoundError,
    ConcurrencyError,
    ErasedError,
    ScopeError,
)


# Starlette's own refusals: a body it cannot decode, no such route, a method the route lacks.
HTTP_CODES = {400: "malformed_json", 404: "not_found", 405: "method_not_allowed"}
FAULT = "an internal fault: retry (a command resent with its command_id is safe)"


def validation_error(exc: RequestValidationError) -> ApiError:
    fields: dict[str, str] = {}
    malformed = False
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            malformed = True
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        # Only the message: the offending value may be personal data.
        fields[".".join(loc) or "body"] = err.get("msg", "invalid")
    if malformed:
        return ApiError(400, "malformed_json", "the body is not valid JSON", {"body": "not JSON"})
    return ApiError(422, "invalid_request", "the request has invalid fields", fields)


def install(app: FastAPI) -> None:
    async def on_api_error(_: Request, exc: Exception) -> OrjsonResponse:
        assert isinstance(exc, ApiError)
        return OrjsonResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def on_domain_error(_: Request, exc: Exception) -> OrjsonResponse:
        err = from_domain(exc)
        return OrjsonResponse(err.body(), status_code=err.status)

    async def on_validation(_: Request, exc: Exception) -> OrjsonResponse:
        assert isinstance(exc, RequestValidationError)
        err = validation_error(exc)
        return OrjsonResponse(err.body(), status_code=err.status)

    async def on_http_error(_: Request, exc: Exception) -> OrjsonResponse:
        assert isinstance(exc, HTTPException)
        code = HTTP_CODES.get(exc.status_code, "http_error")
        body = ApiError(exc.status_code, code, str(exc.detail)).body()
        return OrjsonResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def on_fault(_: Request, exc: Exception) -> OrjsonResponse:
        # Logged with its traceback by the server; the answer says nothing of the request.
        err = ApiError(500, "internal_error", FAULT)
        return OrjsonResponse(err.body(), status_code=500)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_fault)
    app.add_exception_handler(RequestValidationError, on_validation)
    for cls in DOMAIN_ERRORS:
        app.add_exception_handler(cls, on_domain_error)
