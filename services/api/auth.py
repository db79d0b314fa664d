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
from services.api.limits import rate_limited
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
BEARER_DESCRIPTION = "`Authorization: Bearer <token>` of a principal"
BEARER = HTTPBearer(auto_error=False, description=BEARER_DESCRIPTION)
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


class Shortcuts:
    """The `AUTH_TOKENS` entries of one `Settings`, by the SHA-256 of each token: a request's
    token is hashed once and looked up, instead of compared with every entry. Looking up a
    digest says nothing of how much of a secret was guessed right (the guess's digest shares
    no prefix with the secret's), and the table is the settings' own: nothing to invalidate
    (the settings never change; a store credential is never kept here)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.principals: dict[bytes, Principal] = {}
        for secret in settings.auth_tokens:
            principal = shortcut_principal(secret, settings)
            if principal is not None:
                self.principals[hashlib.sha256(secret.encode()).digest()] = principal

    def principal(self, token: str) -> Principal | None:
        return self.principals.get(hashlib.sha256(token.encode()).digest())


_shortcuts: Shortcuts | None = None  # those of the settings last asked for (one app, usually)


def shortcuts_of(settings: Settings) -> Shortcuts:
    global _shortcuts
    table = _shortcuts
    if table is None or table.settings is not settings:
        table = _shortcuts = Shortcuts(settings)
    return table


async def authenticate(token: str, settings: Settings, store: CredentialStore) -> Principal | None:
    """The principal holding `token`: a shortcut entry, else a live credential of the store
    (read on every call, no cache: a revoked token fails on the next one)."""
    principal = shortcuts_of(settings).principal(token)
    if principal is not None:
        return principal
    return await run_in_threadpool(store.lookup, token)


class Gate(HTTPBearer):
    """The dependency of an endpoint behind a bearer token: the HTTPBearer scheme of the
    document (same name and description), whose call is the whole check: the principal, its
    role, then (`limited`: command endpoints) the principal's command limit. One dependency
    instead of three (scheme, check, limit): each costs FastAPI a solve per request."""

    def __init__(self, roles: tuple[str, ...], limited: bool = False) -> None:
        super().__init__(auto_error=False, description=BEARER_DESCRIPTION,
                         scheme_name="HTTPBearer")  # fmt: skip
        self.allowed = frozenset({*roles, "admin"})
        self.limited = limited

    async def __call__(self, request: Request) -> str:  # type: ignore[override]
        # the header only, as `check` without query_token
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            token = ""
        role = await admit(request, token, self.allowed)
        if self.limited:
            await rate_limited(request)
        return role


async def admit(request: Request, token: str, allowed: frozenset[str]) -> str:
    """401 without a principal holding `token`, 403 if its role is not `allowed`; else the
    principal is left on `request.state`."""
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


def require(
    *roles: str, query_token: bool = False, limited: bool = False
) -> Callable[[Request], Awaitable[str]]:
    """A dependency that admits a bearer token of a principal of one of `roles` (or admin),
    and with `limited` then spends one of the principal's command tokens (429 without).

    The token travels in the Authorization header. Only with `query_token` (the live feed:
    EventSource cannot send headers) may it come as `?token=` instead; elsewhere a query
    token is ignored, so a request carrying only that is refused with 401.
    """
    if not query_token:
        return Gate(roles, limited)
    allowed = frozenset({*roles, "admin"})

    async def check_either(request: Request, bearer: Bearer = None, query: Query = None) -> str:
        # `bearer` and `query` only declare the schemes; the header or query is read here
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            token = request.query_params.get("token", "")
        role = await admit(request, token, allowed)
        if limited:
            await rate_limited(request)
        return role

    return check_either


def principal_of(request: Request) -> Principal:
    """The principal `require` admitted for this request."""
    principal: Principal = request.state.principal
    return principal
