"""Bearer-token roles: every endpoint names the roles that may call it (admin may call all)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping

from fastapi import Request

from services.api.errors import ApiError


def require(*roles: str) -> Callable[[Request], Awaitable[str]]:
    allowed = {*roles, "admin"}

    async def check(request: Request) -> str:  # async: no thread hop for a dictionary lookup
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            token = request.query_params.get("token", "")  # EventSource cannot send headers
        tokens: Mapping[str, str] = request.app.state.settings.auth_tokens
        role = tokens.get(token) if token else None
        if role is None:
            raise ApiError(401, "unauthenticated", "a valid bearer token is required")
        if role not in allowed:
            raise ApiError(403, "forbidden", f"role {role} may not call this endpoint")
        request.state.role = role
        # Who, without the secret: the role and a short fingerprint of the credential.
        request.state.actor = f"{role}:{hashlib.sha256(token.encode()).hexdigest()[:12]}"
        return role

    return check
