"""Bearer-token roles: every endpoint names the roles that may call it (admin may call all)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from services.api.errors import ApiError


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
BEARER = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>` of a role")
QUERY_TOKEN = APIKeyQuery(name="token", auto_error=False, description="/v1/feed only")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
Query = Annotated[str | None, Depends(QUERY_TOKEN)]


def require(*roles: str, query_token: bool = False) -> Callable[[Request], Awaitable[str]]:
    """A dependency that admits a bearer token of one of `roles` (or admin).

    The token travels in the Authorization header. Only with `query_token` (the live feed:
    EventSource cannot send headers) may it come as `?token=` instead; elsewhere a query
    token is ignored, so a request carrying only that is refused with 401.
    """
    allowed = {*roles, "admin"}

    async def check(request: Request, bearer: Bearer = None) -> str:
        # async: no thread hop for a few comparisons; `bearer` only declares the scheme
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            token = request.query_params.get("token", "") if query_token else ""
        tokens: Mapping[str, str] = request.app.state.settings.auth_tokens
        role = role_of(token, tokens) if token else None
        if role is None:
            raise ApiError(401, "unauthenticated", "a valid bearer token is required")
        if role not in allowed:
            raise ApiError(403, "forbidden", f"role {role} may not call this endpoint")
        request.state.role = role
        # Who, without the secret: the role and a short fingerprint of the credential.
        request.state.actor = f"{role}:{hashlib.sha256(token.encode()).hexdigest()[:12]}"
        return role

    if not query_token:
        return check

    async def check_either(request: Request, bearer: Bearer = None, query: Query = None) -> str:
        return await check(request)

    return check_either
