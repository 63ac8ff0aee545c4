"""POST /api/v1/auth/login, /auth/refresh, /auth/logout: users' access and refresh tokens.

Login is rate-limited per client address (on top of the per-user lockout in
app.users), and answers the same for an unknown user and a wrong password.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.middleware.rate_limit import RateLimitConfig
from pydantic import BaseModel, ConfigDict, Field

from app.api.database import Database
from app.api.problems import problem
from app.users import LoginRejected, Tokens, authenticate, issue_tokens, logout, refresh

LOGIN_RATE = ("minute", 20)  # attempts per client address
login_rate_limit = RateLimitConfig(rate_limit=LOGIN_RATE, store="rate_limit_login")


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(min_length=1, max_length=512)


@dataclass
class TokensOut:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"


def _out(tokens: Tokens) -> TokensOut:
    return TokensOut(tokens.access_token, tokens.refresh_token, tokens.expires_in, tokens.token_type)


def _rejected(exc: LoginRejected):
    kind = "account-locked" if exc.status == 423 else "unauthenticated"
    return problem(exc.status, kind, "Login refused", exc.reason)


def login_service(database: NamedDependency[Database], data: LoginIn) -> TokensOut:
    with database.connection() as conn:
        try:
            user = authenticate(conn, data.username, data.password)
        except LoginRejected as exc:
            raise _rejected(exc) from None
        return _out(issue_tokens(conn, user))


def refresh_service(database: NamedDependency[Database], data: RefreshIn) -> TokensOut:
    with database.connection() as conn:
        try:
            return _out(refresh(conn, data.refresh_token))
        except LoginRejected as exc:
            raise _rejected(exc) from None


def logout_service(database: NamedDependency[Database], data: RefreshIn) -> None:
    with database.connection() as conn:
        logout(conn, data.refresh_token)


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]
    opt = {"exclude_from_auth": True}

    @post("/login", operation_id="login", summary="Log in: access token (JWT, 15 min) and refresh token",
          status_code=200, middleware=[login_rate_limit.middleware])
    async def login(self, data: JSONBody[LoginIn], database: NamedDependency[Database]) -> TokensOut:
        return await anyio.to_thread.run_sync(login_service, database, data)

    @post("/refresh", operation_id="refreshTokens", summary="Trade a refresh token for a new pair (single use)",
          status_code=200, middleware=[login_rate_limit.middleware])
    async def refresh(self, data: JSONBody[RefreshIn], database: NamedDependency[Database]) -> TokensOut:
        return await anyio.to_thread.run_sync(refresh_service, database, data)

    @post("/logout", operation_id="logout", summary="Revoke a refresh token and the tokens issued from it",
          status_code=204)
    async def logout(self, data: JSONBody[RefreshIn], database: NamedDependency[Database]) -> None:
        await anyio.to_thread.run_sync(logout_service, database, data)
