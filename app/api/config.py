"""Configuration API: one controller per entity, all made by one factory.

`entity_controller(entity)` gives `/api/v1/<path>` list (filter, sort, paginate), read,
create, update (PATCH) and delete for any app.api.services.config.Entity. Reads need the
`read` scope and see only what the caller's data scope allows; writes need the `write`
scope, an admin or engineer role and an unrestricted data scope. Users and API keys are
admin-only. Site import and export work on the whole configuration at once.

(No `from __future__ import annotations` here: the factory's handlers take their
schemas from the closure, so their annotations must be the classes themselves.)
"""

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter
from pydantic import BaseModel, ConfigDict, Field

from app.api.database import Database
from app.api.problems import problem
from app.api.security import (Principal, forget_credentials, requires_role, requires_scope,
                              requires_unrestricted)
from app.api.services import config as service
from app.api.services.config import ENTITIES, Entity, Query

PREFIX = "/api/v1"
WRITE_GUARDS = [requires_scope("write"), requires_role("admin", "engineer"), requires_unrestricted]
_RESERVED = {"limit", "offset", "sort", "q"}
Limit = Parameter(default=100, ge=1, le=service.MAX_LIMIT, description="Page size")
Offset = Parameter(default=0, ge=0, description="Rows to skip")
Sort = Parameter(default=None, description="Columns, comma-separated; '-' for descending",
                 max_length=200)
Search = Parameter(default=None, description="Substring of the name (case-insensitive)",
                   max_length=200)


def _camel(entity: Entity) -> str:
    return "".join(p.capitalize() for p in entity.name.split("_"))


def entity_controller(entity: Entity) -> type[Controller]:
    Create, Update, Read, Page = service._schemas(entity)
    name, title = _camel(entity), entity.title
    pk = entity.pk
    key_doc = ", ".join(c.name for c in pk)

    def run(database: NamedDependency[Database], fn, *args):
        with database.connection() as conn:
            return fn(conn, *args)

    def list_rows(self, request: Request, database: NamedDependency[Database], principal: NamedDependency[Principal],
                  limit: int = Limit, offset: int = Offset, sort: str | None = Sort,
                  q: str | None = Search) -> Page:
        filters = {k: v for k, v in request.query_params.items() if k not in _RESERVED}
        return run(database, service.list_rows, entity, principal.scope, Query(limit, offset, sort, q, filters))

    def create(self, data: JSONBody[Create], database: NamedDependency[Database], principal: NamedDependency[Principal]) -> Read:
        return run(database, service.create_row, entity, data.model_dump(exclude_unset=True, mode="json"),
                   principal.actor)

    handlers: dict[str, Any] = {
        "list_rows": get(operation_id=f"list{name}", summary=f"List {title.lower()} rows",
                         description="Filter by any column with `?<column>=<value>` (`null` for none).",
                         sync_to_thread=True)(list_rows),
    }
    if entity.editable:
        handlers["create"] = post(operation_id=f"create{name}", summary=f"Create a {title.lower()}",
                                  guards=WRITE_GUARDS, sync_to_thread=True)(create)

    if len(pk) == 1:
        def read(self, id: FromPath[int], database: NamedDependency[Database], principal: NamedDependency[Principal]) -> Read:
            return run(database, service.get_row, entity, (id,), principal.scope)

        def update(self, id: FromPath[int], data: JSONBody[Update], database: NamedDependency[Database], principal: NamedDependency[Principal]) -> Read:
            return run(database, service.update_row, entity, (id,), data.model_dump(exclude_unset=True, mode="json"),
                       principal.actor)

        def remove(self, id: FromPath[int], database: NamedDependency[Database], principal: NamedDependency[Principal]) -> None:
            run(database, service.delete_row, entity, (id,), principal.actor)

        item = "/{id:int}"
    else:
        t1 = "int" if pk[0].type is int else "str"
        t2 = "int" if pk[1].type is int else "str"

        def read(self, key1: Any, key2: Any, database: NamedDependency[Database], principal: NamedDependency[Principal]) -> Read:
            return run(database, service.get_row, entity, (key1, key2), principal.scope)

        def update(self, key1: Any, key2: Any, data: JSONBody[Update], database: NamedDependency[Database], principal: NamedDependency[Principal]) -> Read:
            return run(database, service.update_row, entity, (key1, key2),
                       data.model_dump(exclude_unset=True, mode="json"), principal.actor)

        def remove(self, key1: Any, key2: Any, database: NamedDependency[Database], principal: NamedDependency[Principal]) -> None:
            run(database, service.delete_row, entity, (key1, key2), principal.actor)

        types = {"int": int, "str": str}
        for fn in (read, update, remove):
            fn.__annotations__["key1"] = FromPath[types[t1]]
            fn.__annotations__["key2"] = FromPath[types[t2]]
        item = f"/{{key1:{t1}}}/{{key2:{t2}}}"

    handlers["read"] = get(item, operation_id=f"get{name}", summary=f"Read one {title.lower()} ({key_doc})",
                           sync_to_thread=True)(read)
    if entity.editable and len(entity.writable) > len(pk):
        handlers["update"] = patch(item, operation_id=f"update{name}", guards=WRITE_GUARDS, sync_to_thread=True,
                                   summary=f"Change some fields of a {title.lower()} ({key_doc})")(update)
    handlers["remove"] = delete(item, operation_id=f"delete{name}", guards=WRITE_GUARDS, sync_to_thread=True,
                                summary=f"Delete a {title.lower()} ({key_doc})")(remove)
    attrs = {"path": f"{PREFIX}/{entity.path}", "tags": ["configuration"], "guards": [requires_scope("read")],
             **handlers}
    return type(f"{name}Controller", (Controller,), attrs)


# ------------------------------------------------------------------ space tree
@dataclass
class SpaceNode:
    id: int
    parent_id: int | None
    name: str
    kind: str
    area_m2: float | None
    children: "list[SpaceNode]"


class SpaceTreeController(Controller):
    path = f"{PREFIX}/spaces/tree"
    tags = ["configuration"]
    guards = [requires_scope("read")]

    @get(operation_id="getSpaceTree", summary="The visible spaces as a nested tree", sync_to_thread=True)
    def tree(self, database: NamedDependency[Database], principal: NamedDependency[Principal]) -> list[SpaceNode]:
        with database.connection() as conn:
            return service.space_tree(conn, principal.scope)


# ------------------------------------------------------------- users and keys
Role = Literal["admin", "engineer", "viewer"]
KeyScope = Literal["read", "write", "ingest"]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Role = "viewer"
    password: str | None = Field(None, min_length=10, max_length=1024,
                                 description="Omitted: a password is generated and returned once")
    enabled: bool = True
    space_ids: list[int] | None = Field(None, description="Restrict to these spaces and their subtrees")
    tenant_ids: list[int] | None = Field(None, description="Restrict to these tenants")


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    password: str | None = Field(None, min_length=10, max_length=1024)
    enabled: bool | None = None
    unlock: bool | None = Field(None, description="true: clear the failed-login lock")
    space_ids: list[int] | None = None
    tenant_ids: list[int] | None = None


class UserOut(BaseModel):
    id: int
    username: str
    role: str
    enabled: bool
    restricted: bool
    created_at: dt.datetime
    last_login_at: dt.datetime | None = None
    failed_logins: int
    locked_until: dt.datetime | None = None
    space_ids: list[int] | None = None
    tenant_ids: list[int] | None = None


class UserCreated(UserOut):
    password: str = Field(description="Shown once; only its argon2id hash is stored")


class UserPage(BaseModel):
    items: list[UserOut]
    total: int
    limit: int
    offset: int


class UsersController(Controller):
    path = f"{PREFIX}/users"
    tags = ["administration"]
    guards = [requires_role("admin"), requires_unrestricted]

    @get(operation_id="listUsers", summary="List users", sync_to_thread=True)
    def list_users(self, database: NamedDependency[Database], limit: int = Limit, offset: int = Offset) -> UserPage:
        with database.connection() as conn:
            return service.list_users(conn, limit, offset)

    @post(operation_id="createUser", summary="Create a user (the password is shown once)", sync_to_thread=True)
    def create_user(self, data: JSONBody[UserCreate], database: NamedDependency[Database], principal: NamedDependency[Principal]) -> UserCreated:
        with database.connection() as conn:
            row, password = service.create_user(conn, data.model_dump(exclude_unset=True), principal.actor)
        return UserCreated(**row, password=password)

    @get("/{id:int}", operation_id="getUser", summary="Read a user", sync_to_thread=True)
    def get_user(self, id: FromPath[int], database: NamedDependency[Database]) -> UserOut:
        with database.connection() as conn:
            row = service.user_row(conn, id)
        if row is None:
            raise problem(404, "not-found", "Not found", f"no user {id}")
        return row

    @patch("/{id:int}", operation_id="updateUser", summary="Change a user's role, password, state or scope",
           sync_to_thread=True)
    def update_user(self, request: Request, id: FromPath[int], data: JSONBody[UserUpdate],
                    database: NamedDependency[Database], principal: NamedDependency[Principal]) -> UserOut:
        try:
            with database.connection() as conn:
                return service.update_user(conn, id, data.model_dump(exclude_unset=True), principal.actor)
        finally:
            forget_credentials(request.app)

    @delete("/{id:int}", operation_id="deleteUser", summary="Delete a user", sync_to_thread=True)
    def delete_user(self, request: Request, id: FromPath[int], database: NamedDependency[Database],
                    principal: NamedDependency[Principal]) -> None:
        try:
            with database.connection() as conn:
                service.delete_user(conn, id, principal.actor)
        finally:
            forget_credentials(request.app)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    scopes: list[KeyScope] = Field(min_length=1)
    expires_in_days: float | None = Field(None, gt=0, le=36500)
    data_source_id: int | None = None
    space_ids: list[int] | None = None
    tenant_ids: list[int] | None = None


class KeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    scopes: list[str]
    data_source_id: int | None = None
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    restricted: bool
    space_ids: list[int] | None = None
    tenant_ids: list[int] | None = None


class KeyCreated(KeyOut):
    secret: str = Field(description="The whole key, shown once; only its SHA-256 is stored")


class KeyPage(BaseModel):
    items: list[KeyOut]
    total: int
    limit: int
    offset: int


class ApiKeysController(Controller):
    path = f"{PREFIX}/api-keys"
    tags = ["administration"]
    guards = [requires_role("admin"), requires_unrestricted]

    @get(operation_id="listApiKeys", summary="List API keys (never their secrets)", sync_to_thread=True)
    def list_keys(self, database: NamedDependency[Database], limit: int = Limit, offset: int = Offset) -> KeyPage:
        with database.connection() as conn:
            return service.list_keys(conn, limit, offset)

    @post(operation_id="createApiKey", summary="Issue an API key (the secret is shown once)", sync_to_thread=True)
    def create_key(self, data: JSONBody[KeyCreate], database: NamedDependency[Database], principal: NamedDependency[Principal]) -> KeyCreated:
        with database.connection() as conn:
            row, secret = service.create_key(conn, data.model_dump(exclude_unset=True), principal.actor)
        return KeyCreated(**row, secret=secret)

    @get("/{id:int}", operation_id="getApiKey", summary="Read an API key", sync_to_thread=True)
    def get_key(self, id: FromPath[int], database: NamedDependency[Database]) -> KeyOut:
        with database.connection() as conn:
            row = service.key_row(conn, id)
        if row is None:
            raise problem(404, "not-found", "Not found", f"no API key {id}")
        return row

    @delete("/{id:int}", operation_id="revokeApiKey", summary="Revoke an API key at once", sync_to_thread=True)
    def revoke_key(self, request: Request, id: FromPath[int], database: NamedDependency[Database],
                   principal: NamedDependency[Principal]) -> None:
        try:
            with database.connection() as conn:
                service.revoke_key(conn, id, principal.actor)
        finally:
            forget_credentials(request.app)


# ------------------------------------------------------------------- audit log
class AuditEntry(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    action: str
    entity: str
    entity_id: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class AuditController(Controller):
    path = f"{PREFIX}/audit-log"
    tags = ["administration"]
    guards = [requires_role("admin"), requires_unrestricted]

    @get(operation_id="listAuditLog", summary="Recent writes, newest first: who, when, what, before, after",
         sync_to_thread=True)
    def entries(self, database: NamedDependency[Database], entity: str | None = Parameter(default=None, max_length=100),
                limit: int = Parameter(default=100, ge=1, le=1000)) -> list[AuditEntry]:
        from app import audit

        with database.connection() as conn:
            return audit.entries(conn, entity=entity, limit=limit)


# --------------------------------------------------------------------- tariffs
class TariffImportController(Controller):
    path = f"{PREFIX}/tariffs/import"
    tags = ["configuration"]
    guards = WRITE_GUARDS

    @post(operation_id="importTariffs", status_code=200, sync_to_thread=True,
          summary="Validate and store OpenEI URDB tariffs (one, a list, or {\"items\": [...]}), all or nothing",
          description="A tariff whose label exists is updated (its version goes up); see docs/billing.md.")
    def import_tariffs(self, data: JSONBody[dict[str, Any] | list[dict[str, Any]]], database: NamedDependency[Database],
                       principal: NamedDependency[Principal]) -> list[dict[str, Any]]:
        with database.connection() as conn:
            return service.import_tariffs(conn, data, principal.actor)


# ------------------------------------------------------------------------ site
@dataclass
class ImportResult:
    changed: bool
    dry_run: bool
    summary: str
    created: dict[str, int]
    updated: dict[str, int]
    unchanged: dict[str, int]


class SiteController(Controller):
    path = f"{PREFIX}/site"
    tags = ["configuration"]
    guards = [requires_unrestricted]

    @post("/import", operation_id="importSite", guards=WRITE_GUARDS, status_code=200,
          summary="Import a whole site file (YAML or JSON), validated whole, all or nothing",
          description="Body: the `wattline site import` format, as YAML (`application/yaml`) or JSON. "
                      "Every problem is listed; nothing is written unless the whole file is valid.")
    async def import_site(self, request: Request, database: NamedDependency[Database], principal: NamedDependency[Principal],
                          dry_run: bool = Parameter(default=False)) -> ImportResult:
        body = await request.body()
        return await anyio.to_thread.run_sync(_import_site, database, body, dry_run, principal.actor)

    @get("/export", operation_id="exportSite", guards=[requires_scope("read")], sync_to_thread=True,
         summary="The whole site configuration, as YAML or JSON")
    def export_site(self, database: NamedDependency[Database],
                    format: Literal["yaml", "json"] = Parameter(default="yaml")) -> Response[Any]:
        from app.site import export_site, export_site_yaml

        url = getattr(database, "_url", None)
        if format == "json":
            return Response(export_site(url), media_type="application/json")
        return Response(export_site_yaml(url), media_type="application/yaml")


def _import_site(database: NamedDependency[Database], body: bytes, dry_run: bool, actor: str) -> ImportResult:
    from app import audit
    from app.site import SiteFileError, import_site, parse_site_yaml

    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise problem(400, "malformed-body", "Malformed body", "the site file is not UTF-8") from None
    try:
        report = import_site(parse_site_yaml(text, "request body"), url=getattr(database, "_url", None), dry_run=dry_run,
                             source="request body")
    except SiteFileError as exc:
        errors = [{"field": e.split(": ", 1)[0] if ": " in e else None, "message": e.split(": ", 1)[-1]}
                  for e in exc.errors]
        raise problem(422, "invalid-site-file", "Invalid site file",
                      f"{len(exc.errors)} problem(s), nothing was written: {exc.errors[0]}",
                      field=errors[0]["field"], errors=errors) from None
    result = ImportResult(report.changed, report.dry_run, report.summary(), dict(report.created),
                          dict(report.updated), dict(report.unchanged))
    if report.changed and not dry_run:
        with database.connection() as conn:
            audit.record(conn, actor, "import", "site", None, None, {
                "created": result.created, "updated": result.updated})
    return result


CONTROLLERS = [SpaceTreeController, TariffImportController, *(entity_controller(e) for e in ENTITIES), UsersController,
               ApiKeysController, AuditController, SiteController]
