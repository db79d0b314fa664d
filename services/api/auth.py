"""Bearer tokens of principals: every endpoint names the roles that may call it (admin may call
all); the principal (id, role, scope) is left on `request.state` for the route to check."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from services.api.errors import ApiError
from services.credentials import CredentialStore, Principal
from services.settings import Settings


def role_of(token: str, tokens: Mapping[str, str]) -> str | None:
    """The role of `token` among the configured `tokens` (token -> role), or None.

    Every configured token is compared, in constant time, whatever matches: how long the
    answer takes says nothing about how much of a secret was guessed right.
    """
    given = token.encode()
    found = None
    for secret, role in tokens.items():
        if hmac.compare_digest(given, secret.encode()):
            found = role
    return found


# Declared in the document (securitySchemes); the check below reads the header itself.
BEARER = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>` of a principal")
QUERY_TOKEN = APIKeyQuery(name="token", auto_error=False, description="/v1/feed only")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
Query = Annotated[str | None, Depends(QUERY_TOKEN)]


def shortcut_principal(token: str, settings: Settings) -> Principal | None:
    """The principal of an `AUTH_TOKENS` entry (the development shortcut): `<role>:<fingerprint
    of the token>`, of nation-wide scope (no station, commune or province restriction)."""
    role = role_of(token, settings.auth_tokens)
    if role is None:
        return None
    return Principal(f"{role}:{hashlib.sha256(token.encode()).hexdigest()[:12]}", role)


async def authenticate(token: str, settings: Settings, store: CredentialStore) -> Principal | None:
    """The principal holding `token`: a shortcut entry, else a live credential of the store
    (read on every call, no cache: a revoked token fails on the next one)."""
    principal = shortcut_principal(token, settings)
    if principal is not None:
        return principal
    return await run_in_threadpool(store.lookup, token)


def require(*roles: str, query_token: bool = False) -> Callable[[Request], Awaitable[str]]:
    """A dependency that admits a bearer token of a principal of one of `roles` (or admin).

    The token travels in the Authorization header. Only with `query_token` (the live feed:
    EventSource cannot send headers) may it come as `?token=` instead; elsewhere a query
    token is ignored, so a request carrying only that is refused with 401.
    """
    allowed = {*roles, "admin"}

    async def check(request: Request, bearer: Bearer = None) -> str:
        # `bearer` only declares the scheme; the header is read here
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            token = request.query_params.get("token", "") if query_token else ""
        settings: Settings = request.app.state.settings
        store: CredentialStore = request.app.state.backbone.credentials
        principal = await authenticate(token, settings, store) if token else None
        if principal is None:
            raise ApiError(401, "unauthenticated", "a valid bearer token is required")
        if principal.role not in allowed:
            raise ApiError(403, "forbidden", f"role {principal.role} may not call this endpoint")
        request.state.principal = principal
        request.state.role = principal.role
        request.state.actor = principal.id  # who, never the secret
        return principal.role

    if not query_token:
        return check

    async def check_either(request: Request, bearer: Bearer = None, query: Query = None) -> str:
        return await check(request)

    return check_either


def principal_of(request: Request) -> Principal:
    """The principal `require` admitted for this request."""
    principal: Principal = request.state.principal
    return principal
