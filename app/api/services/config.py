"""Configuration CRUD, once for every entity.

An `Entity` names a config table (through its SQLAlchemy model in app.models), its URL
path, which of its columns must be visible in the caller's data scope (app.scopes), and
an optional validator for what the database cannot say well (protocol settings, formulas).
From that one description come the request and response schemas, filtering, sorting,
pagination, the scope filter, the audit entry of every write, and the translation of
database integrity errors into problems naming the offending field.

Rows travel as JSON end to end: PostgreSQL reads them with `to_jsonb` and writes them
with `jsonb_populate_record`, so every column type (numeric, jsonb, timestamps with
±infinity, arrays) converts the same way in both directions.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, create_model
from sqlalchemy import (
    ARRAY, BigInteger, Boolean, Date, Double, Integer, LargeBinary, Numeric, SmallInteger, Text,
)
from sqlalchemy.dialects.postgresql import INTERVAL, JSONB, TIMESTAMP, UUID

from app import audit, models
from app.api.problems import problem
from app.formula import validate_formulas
from app.protocols import address_errors, connection_errors
from app.scopes import visible_ids
from app.tariffs import ReactiveMeter, TariffAssignment, TariffRow

MAX_LIMIT = 1000
Validator = Callable[[psycopg.Connection, dict, "dict | None"], list[tuple[str, str]]]


# --------------------------------------------------------------------- entities
@dataclass(frozen=True)
class Column:
    name: str
    type: Any          # Python type for the schemas
    nullable: bool
    has_default: bool
    identity: bool
    primary_key: bool


@dataclass
class Entity:
    name: str                     # singular, as in the audit log: "space"
    path: str                     # URL segment: "spaces"
    model: type
    title: str
    scope_cols: dict[str, str] = field(default_factory=dict)  # column -> app.scopes kind
    validate: Validator | None = None
    searchable: str | None = "name"
    editable: bool = True         # False: created and changed elsewhere (tariffs: URDB import)
    columns: list[Column] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.columns = [_column(c) for c in self.model.__table__.columns]

    @property
    def table(self) -> str:
        return self.model.__table__.name

    @property
    def pk(self) -> list[Column]:
        return [c for c in self.columns if c.primary_key]

    @property
    def writable(self) -> list[Column]:
        return [c for c in self.columns if not c.identity]

    @property
    def names(self) -> set[str]:
        return {c.name for c in self.columns}


def _python_type(col) -> Any:
    t = col.type
    if isinstance(t, (Integer, BigInteger, SmallInteger)):
        return int
    if isinstance(t, (Numeric, Double)):
        return float
    if isinstance(t, Boolean):
        return bool
    if isinstance(t, JSONB):
        return dict[str, Any]
    if isinstance(t, Date):
        return dt.date
    if isinstance(t, ARRAY):
        inner = t.item_type
        return list[float] if isinstance(inner, (Double, Numeric)) else list[str]
    if isinstance(t, (TIMESTAMP, INTERVAL, UUID, Text, LargeBinary)):
        return str  # timestamps: ISO 8601, or "infinity" / "-infinity"
    return str


def _column(col) -> Column:
    return Column(
        name=col.name, type=_python_type(col), nullable=bool(col.nullable),
        has_default=col.server_default is not None or col.identity is not None,
        identity=col.identity is not None, primary_key=bool(col.primary_key),
    )


# ------------------------------------------------------------------ validators
def _validate_data_source(conn, row: dict, old: dict | None) -> list[tuple[str, str]]:
    protocol = row.get("protocol")
    errors = connection_errors(protocol, row.get("connection") or {})
    return [(f"connection.{e.split(':', 1)[0]}" if not e.startswith("protocol:") else "protocol",
             e.split(": ", 1)[-1]) for e in errors]


def _validate_point(conn, row: dict, old: dict | None) -> list[tuple[str, str]]:
    found = conn.execute("SELECT protocol FROM config.data_source WHERE id = %s",
                         (row.get("data_source_id"),)).fetchone()
    if found is None:
        return [("data_source_id", f"no data source with id {row.get('data_source_id')}")]
    errors = address_errors(found[0], row.get("address") or {})
    return [(f"address.{e.split(':', 1)[0]}", e.split(": ", 1)[-1]) for e in errors]


def _validate_meter(conn, row: dict, old: dict | None) -> list[tuple[str, str]]:
    if row.get("kind") == "virtual" and not row.get("formula"):
        return [("formula", "a virtual meter needs a formula")]
    if row.get("kind", "physical") != "virtual" and row.get("formula"):
        return [("formula", "only virtual meters have a formula")]
    if not row.get("formula"):
        return []
    name = row.get("name")
    names, formulas = set(), {}
    for mid, mname, formula in conn.execute("SELECT id, name, formula FROM config.meter").fetchall():
        if old is not None and mid == old.get("id"):
            continue
        names.add(mname)
        if formula:
            formulas[mname] = formula
    formulas[name] = row["formula"]
    errors = validate_formulas(formulas, names)
    ours = f"meters[{name}].formula: "
    out = [("formula", e.removeprefix(ours)) for e in errors if e.startswith(ours)]
    return out or [("formula", e) for e in errors]


_LINK_SCOPE = {"meter_id": "meter"}
ENTITIES: list[Entity] = [
    Entity("cost_center", "cost-centers", models.CostCenter, "Cost center", {"id": "cost_center"}),
    Entity("space", "spaces", models.Space, "Space", {"id": "space"}),
    Entity("energy_category", "energy-categories", models.EnergyCategory, "Energy category"),
    Entity("energy_item", "energy-items", models.EnergyItem, "Energy item"),
    Entity("data_source", "data-sources", models.DataSource, "Data source", {"id": "data_source"},
           _validate_data_source),
    Entity("point", "points", models.Point, "Point", {"id": "point"}, _validate_point),
    Entity("meter", "meters", models.Meter, "Meter", {"id": "meter"}, _validate_meter),
    Entity("meter_point", "meter-points", models.MeterPoint, "Meter-point link",
           {"meter_id": "meter", "point_id": "point"}, searchable=None),
    Entity("equipment", "equipment", models.Equipment, "Equipment", {"id": "equipment"}),
    Entity("combined_equipment", "combined-equipment", models.CombinedEquipment, "Combined equipment",
           {"id": "combined_equipment"}),
    Entity("combined_equipment_member", "combined-equipment-members", models.CombinedEquipmentMember,
           "Combined equipment member", {"combined_equipment_id": "combined_equipment"}, searchable=None),
    Entity("tenant", "tenants", models.Tenant, "Tenant", {"id": "tenant"}),
    Entity("store", "stores", models.Store, "Store", {"id": "store"}),
    Entity("shopfloor", "shopfloors", models.Shopfloor, "Shopfloor", {"id": "shopfloor"}),
    Entity("carbon_region", "carbon-regions", models.CarbonRegion, "Carbon region"),
    Entity("emission_factor", "emission-factors", models.EmissionFactor, "Emission factor", searchable=None),
    Entity("tariff", "tariffs", TariffRow, "Tariff", editable=False),
    Entity("tariff_assignment", "tariff-assignments", TariffAssignment, "Tariff assignment",
           {"cost_center_id": "cost_center", "tenant_id": "tenant", "meter_id": "meter"}, searchable=None),
    Entity("reactive_meter", "reactive-meters", ReactiveMeter, "Reactive meter",
           {"meter_id": "meter", "reactive_meter_id": "meter"}, searchable=None),
] + [
    Entity(f"{kind}_meter", f"{kind.replace('_', '-')}-meters", link, f"{kind.replace('_', ' ').capitalize()}-meter link",
           {col: kind, "meter_id": "meter"}, searchable=None)
    for kind, (_model, link, col) in models.ENTITY_LINKS.items()
]
BY_NAME = {e.name: e for e in ENTITIES}


# -------------------------------------------------------------------- schemas
def _schemas(entity: Entity) -> tuple[type[BaseModel], type[BaseModel], type[BaseModel], type[BaseModel]]:
    """(create, update, read, page) pydantic models for an entity."""
    base = f"{''.join(p.capitalize() for p in entity.name.split('_'))}"
    strict = ConfigDict(extra="forbid")
    create_fields, update_fields, read_fields = {}, {}, {}
    for c in entity.writable:
        required = not c.nullable and not c.has_default
        create_fields[c.name] = (c.type, ...) if required else (c.type | None, None)
        update_fields[c.name] = (c.type | None, None)
    for c in entity.columns:
        read_fields[c.name] = (c.type | None, None) if c.nullable else (c.type, ...)
    create = create_model(f"{base}Create", __config__=strict, **create_fields)
    update = create_model(f"{base}Update", __config__=strict, **update_fields)
    read = create_model(f"{base}", **read_fields)
    page = create_model(f"{base}Page", items=(list[read], ...), total=(int, ...), limit=(int, ...),
                        offset=(int, ...))
    return create, update, read, page


# ---------------------------------------------------------------------- errors
_KEY_COLS = re.compile(r"Key \((.*?)\)=")


def _constraint_columns(conn: psycopg.Connection, entity: Entity, constraint: str | None) -> list[str]:
    if not constraint:
        return []
    rows = conn.execute(
        """
        SELECT a.attname FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
        WHERE c.conname = %s AND c.conrelid = %s::regclass ORDER BY a.attnum
        """,
        (constraint, f"config.{entity.table}"),
    ).fetchall()
    return [r[0] for r in rows]


def _key_columns(entity: Entity, detail: str | None) -> list[str]:
    m = _KEY_COLS.search(detail or "")
    if not m:
        return []
    tokens = re.findall(r"[a-z_]+", m.group(1))
    return [t for t in tokens if t in entity.names]


def database_problem(conn: psycopg.Connection, entity: Entity, exc: psycopg.Error, body: dict | None = None):
    """A problem naming the field a database error is about (None: not a data error)."""
    diag = exc.diag
    message = diag.message_primary or str(exc)
    detail = diag.message_detail
    constraint = diag.constraint_name

    def fields_or(guess: list[str]) -> list[str]:
        return guess or _constraint_columns(conn, entity, constraint) or []

    def make(status: int, kind: str, title: str, fields: list[str], text: str):
        f = fields[0] if fields else None
        errors = [{"field": x, "message": text} for x in fields] or [{"field": None, "message": text}]
        return problem(status, kind, title, f"{f}: {text}" if f else text, field=f, errors=errors)

    if isinstance(exc, psycopg.errors.UniqueViolation):
        cols = fields_or(_key_columns(entity, detail))
        return make(409, "conflict", "Conflict", cols, f"already exists ({detail or message})")
    if isinstance(exc, psycopg.errors.ForeignKeyViolation):
        if detail and "still referenced" in detail:
            table = re.search(r'from table "(\w+)"', detail)
            return make(409, "conflict", "Conflict", [c.name for c in entity.pk],
                        f"still used by {table.group(1) if table else 'other rows'}; remove those first")
        cols = fields_or(_key_columns(entity, detail))
        return make(422, "invalid-reference", "Invalid reference", cols,
                    f"refers to a row that does not exist ({detail or message})")
    if isinstance(exc, psycopg.errors.CheckViolation):
        if constraint == "space_no_cycle":
            return make(409, "conflict", "Conflict", ["parent_id"], message)
        return make(422, "invalid-field", "Invalid field", fields_or([]), f"violates {constraint}: {message}")
    if isinstance(exc, psycopg.errors.NotNullViolation):
        return make(422, "invalid-field", "Invalid field", [diag.column_name] if diag.column_name else [],
                    "must not be null")
    if isinstance(exc, psycopg.errors.ExclusionViolation):
        return make(409, "conflict", "Conflict", fields_or([]), f"overlaps an existing row ({detail or message})")
    if isinstance(exc, (psycopg.errors.DataException, psycopg.errors.InvalidTextRepresentation)):
        guess = [c for c in (body or {}) if c in entity.names and str((body or {})[c]) in message] or []
        return make(422, "invalid-field", "Invalid field", guess, message)
    return None


def _validation_problem(errors: list[tuple[str, str]]):
    first = errors[0]
    return problem(422, "invalid-field", "Invalid field", f"{first[0]}: {first[1]}", field=first[0],
                   errors=[{"field": f, "message": m} for f, m in errors])


# ------------------------------------------------------------------- service
@dataclass
class Query:
    limit: int = 100
    offset: int = 0
    sort: str | None = None
    q: str | None = None
    filters: dict[str, str] = field(default_factory=dict)


def _table(entity: Entity) -> sql.Composable:
    return sql.SQL("config.{}").format(sql.Identifier(entity.table))


def _scope_clause(conn, entity: Entity, scope) -> tuple[list[sql.Composable], list]:
    where, params = [], []
    nullable = {c.name for c in entity.columns if c.nullable}
    for col, kind in entity.scope_cols.items():
        ids = visible_ids(conn, scope, kind)
        if ids is not None:
            # A NULL reference restricts nothing (a tariff assignment names one of three).
            test = "(t.{0} IS NULL OR t.{0} = ANY(%s))" if col in nullable else "t.{0} = ANY(%s)"
            where.append(sql.SQL(test).format(sql.Identifier(col)))
            params.append(sorted(ids))
    return where, params


def _pk_clause(entity: Entity, key: tuple) -> tuple[list[sql.Composable], list]:
    if len(key) != len(entity.pk):
        raise problem(404, "not-found", "Not found", f"no such {entity.title.lower()}")
    return ([sql.SQL("t.{}::text = %s").format(sql.Identifier(c.name)) if c.type is str
             else sql.SQL("t.{} = %s").format(sql.Identifier(c.name)) for c in entity.pk], list(key))


def _canonical_key(conn, entity: Entity, key: tuple) -> tuple:
    """Timestamp keys as PostgreSQL prints them, so '2026-01-01T00:00:00Z' finds its row."""
    out = []
    for c, v in zip(entity.pk, key):
        if c.type is str and isinstance(v, str):
            try:
                v = conn.execute("SELECT %s::timestamptz::text", (v,)).fetchone()[0]
            except psycopg.Error:
                raise problem(404, "not-found", "Not found", f"no such {entity.title.lower()}") from None
        out.append(v)
    return tuple(out)


def list_rows(conn, entity: Entity, scope, query: Query) -> dict:
    where, params = _scope_clause(conn, entity, scope)
    for name, value in query.filters.items():
        if name not in entity.names:
            raise problem(422, "invalid-field", "Invalid field", f"{name}: not a filterable column of "
                          f"{entity.path} (use {', '.join(sorted(entity.names))})", field=name)
        if value in ("null", ""):
            where.append(sql.SQL("t.{} IS NULL").format(sql.Identifier(name)))
        else:
            where.append(sql.SQL("t.{}::text = %s").format(sql.Identifier(name)))
            params.append(value)
    if query.q and entity.searchable:
        where.append(sql.SQL("t.{} ILIKE %s").format(sql.Identifier(entity.searchable)))
        params.append("%" + query.q.replace("%", r"\%").replace("_", r"\_") + "%")
    order = []
    if query.sort:
        for part in query.sort.split(","):
            name = part.strip().lstrip("-+")
            if name not in entity.names:
                raise problem(422, "invalid-field", "Invalid field",
                              f"sort: {name!r} is not a column of {entity.path}", field="sort")
            order.append(sql.SQL("t.{} {} NULLS LAST").format(
                sql.Identifier(name), sql.SQL("DESC" if part.strip().startswith("-") else "ASC")))
    order += [sql.SQL("t.{}").format(sql.Identifier(c.name)) for c in entity.pk]
    stmt = sql.SQL("SELECT to_jsonb(t), count(*) OVER () FROM {} t {} ORDER BY {} LIMIT %s OFFSET %s").format(
        _table(entity),
        sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
        sql.SQL(", ").join(order),
    )
    rows = conn.execute(stmt, [*params, query.limit, query.offset]).fetchall()
    total = rows[0][1] if rows else _count(conn, entity, where, params)
    return {"items": [r[0] for r in rows], "total": total, "limit": query.limit, "offset": query.offset}


def _count(conn, entity, where, params) -> int:
    stmt = sql.SQL("SELECT count(*) FROM {} t {}").format(
        _table(entity), sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""))
    return conn.execute(stmt, params).fetchone()[0]


def _fetch(conn, entity: Entity, key: tuple, scope=None, lock: bool = False) -> dict | None:
    where, params = _pk_clause(entity, key)
    if scope is not None:
        w2, p2 = _scope_clause(conn, entity, scope)
        where, params = where + w2, params + p2
    stmt = sql.SQL("SELECT to_jsonb(t) FROM {} t WHERE {}{}").format(
        _table(entity), sql.SQL(" AND ").join(where), sql.SQL(" FOR UPDATE" if lock else ""))
    row = conn.execute(stmt, params).fetchone()
    return row[0] if row else None


def get_row(conn, entity: Entity, key: tuple, scope) -> dict:
    row = _fetch(conn, entity, _canonical_key(conn, entity, key), scope)
    if row is None:
        raise problem(404, "not-found", "Not found", f"no {entity.title.lower()} {'/'.join(map(str, key))}")
    return row


def _write(conn, entity: Entity, body: dict, run: Callable[[], dict]) -> dict:
    try:
        return run()
    except psycopg.errors.IntegrityError as exc:
        err = exc
    except psycopg.errors.DataError as exc:
        err = exc
    mapped = database_problem(conn, entity, err, body)
    if mapped is None:
        raise err
    raise mapped


def _check(conn, entity: Entity, row: dict, old: dict | None) -> None:
    if entity.validate is not None:
        errors = entity.validate(conn, row, old)
        if errors:
            raise _validation_problem(errors)


def _key_of(entity: Entity, row: dict) -> str:
    return "/".join(str(row.get(c.name)) for c in entity.pk)


def create_row(conn, entity: Entity, body: dict, actor: str) -> dict:
    def run():
        with conn.transaction():
            _check(conn, entity, body, None)
            cols = [c for c in body if c in entity.names]
            ids = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
            stmt = sql.SQL(
                "INSERT INTO {tbl} AS t ({cols}) SELECT {cols} FROM jsonb_populate_record(NULL::{tbl}, %s) "
                "RETURNING to_jsonb(t)"
            ).format(tbl=_table(entity), cols=ids)
            if not cols:
                stmt = sql.SQL("INSERT INTO {} AS t DEFAULT VALUES RETURNING to_jsonb(t)").format(_table(entity))
            row = conn.execute(stmt, [Jsonb(body)] if cols else []).fetchone()[0]
            audit.record(conn, actor, "create", entity.name, _key_of(entity, row), None, row)
            return row
    return _write(conn, entity, body, run)


def update_row(conn, entity: Entity, key: tuple, body: dict, actor: str) -> dict:
    key = _canonical_key(conn, entity, key)

    def run():
        with conn.transaction():
            old = _fetch(conn, entity, key, lock=True)
            if old is None:
                raise problem(404, "not-found", "Not found", f"no {entity.title.lower()} {'/'.join(map(str, key))}")
            cols = [c for c in body if c in entity.names]
            if not cols:
                return old
            _check(conn, entity, {**old, **body}, old)
            where, params = _pk_clause(entity, key)
            stmt = sql.SQL(
                "UPDATE {tbl} AS t SET ({cols}) = (SELECT {cols} FROM jsonb_populate_record(NULL::{tbl}, %s)) "
                "WHERE {where} RETURNING to_jsonb(t)"
            ).format(tbl=_table(entity), cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols),
                     where=sql.SQL(" AND ").join(where))
            if len(cols) == 1:  # a one-column row constructor needs ROW()
                stmt = sql.SQL(
                    "UPDATE {tbl} AS t SET {col} = (SELECT {col} FROM jsonb_populate_record(NULL::{tbl}, %s)) "
                    "WHERE {where} RETURNING to_jsonb(t)"
                ).format(tbl=_table(entity), col=sql.Identifier(cols[0]), where=sql.SQL(" AND ").join(where))
            row = conn.execute(stmt, [Jsonb(body), *params]).fetchone()[0]
            audit.record(conn, actor, "update", entity.name, _key_of(entity, row), old, row)
            return row
    return _write(conn, entity, body, run)


def delete_row(conn, entity: Entity, key: tuple, actor: str) -> None:
    key = _canonical_key(conn, entity, key)

    def run():
        with conn.transaction():
            old = _fetch(conn, entity, key, lock=True)
            if old is None:
                raise problem(404, "not-found", "Not found", f"no {entity.title.lower()} {'/'.join(map(str, key))}")
            where, params = _pk_clause(entity, key)
            conn.execute(sql.SQL("DELETE FROM {} t WHERE {}").format(_table(entity), sql.SQL(" AND ").join(where)),
                         params)
            audit.record(conn, actor, "delete", entity.name, _key_of(entity, old), old, None)
            return old
    _write(conn, entity, {}, run)


# ------------------------------------------------------------------ space tree
def space_tree(conn, scope) -> list[dict]:
    """Visible spaces as nested nodes; a visible space whose parent is hidden is a root."""
    ids = visible_ids(conn, scope, "space")
    rows = conn.execute(
        "SELECT id, parent_id, name, kind, area_m2::float8 FROM config.space "
        "WHERE %(ids)s::int[] IS NULL OR id = ANY(%(ids)s) ORDER BY name, id",
        {"ids": None if ids is None else sorted(ids)},
    ).fetchall()
    nodes = {r[0]: {"id": r[0], "parent_id": r[1], "name": r[2], "kind": r[3], "area_m2": r[4], "children": []}
             for r in rows}
    roots = []
    for node in nodes.values():
        parent = nodes.get(node["parent_id"])
        (parent["children"] if parent else roots).append(node)
    return roots


# ------------------------------------------------------------- users and keys
_USER_READ = ("id", "username", "role", "enabled", "restricted", "created_at", "last_login_at",
              "failed_logins", "locked_until")


def _grants(conn, table: str, owner_col: str, owner_id: int, target: str) -> list[int]:
    rows = conn.execute(sql.SQL("SELECT {} FROM config.{} WHERE {} = %s ORDER BY 1").format(
        sql.Identifier(f"{target}_id"), sql.Identifier(table), sql.Identifier(owner_col)), (owner_id,)).fetchall()
    return [r[0] for r in rows]


def _set_grants(conn, prefix: str, owner_col: str, owner_id: int, space_ids, tenant_ids) -> bool:
    """Replace a user's or key's data scope; returns whether it is restricted."""
    restricted = space_ids is not None or tenant_ids is not None
    for target, ids in (("space", space_ids), ("tenant", tenant_ids)):
        table = sql.Identifier(f"{prefix}_{target}")
        conn.execute(sql.SQL("DELETE FROM config.{} WHERE {} = %s").format(table, sql.Identifier(owner_col)),
                     (owner_id,))
        for i in sorted(set(ids or [])):
            conn.execute(sql.SQL("INSERT INTO config.{} ({}, {}) VALUES (%s, %s)").format(
                table, sql.Identifier(owner_col), sql.Identifier(f"{target}_id")), (owner_id, i))
    return restricted


def _keep_an_admin(conn, user_id: int) -> None:
    """Refuse to remove the last enabled, unrestricted admin (nobody could manage users)."""
    others = conn.execute(
        "SELECT count(*) FROM config.app_user WHERE role = 'admin' AND enabled AND NOT restricted AND id <> %s",
        (user_id,),
    ).fetchone()[0]
    if others == 0:
        raise problem(409, "conflict", "Conflict", "role: this is the last enabled admin; make another first",
                      field="role")


def user_row(conn, user_id: int) -> dict | None:
    row = conn.execute(f"SELECT {', '.join(_USER_READ)} FROM config.app_user WHERE id = %s", (user_id,)).fetchone()
    if row is None:
        return None
    out = dict(zip(_USER_READ, row))
    out["space_ids"] = _grants(conn, "user_space", "user_id", user_id, "space") if out["restricted"] else None
    out["tenant_ids"] = _grants(conn, "user_tenant", "user_id", user_id, "tenant") if out["restricted"] else None
    return out


def list_users(conn, limit: int, offset: int) -> dict:
    ids = [r[0] for r in conn.execute("SELECT id FROM config.app_user ORDER BY id LIMIT %s OFFSET %s",
                                      (limit, offset)).fetchall()]
    total = conn.execute("SELECT count(*) FROM config.app_user").fetchone()[0]
    return {"items": [user_row(conn, i) for i in ids], "total": total, "limit": limit, "offset": offset}


def _grant_problem(exc: psycopg.Error):
    detail = exc.diag.message_detail or ""
    f = "tenant_ids" if "tenant" in detail else "space_ids"
    return problem(422, "invalid-reference", "Invalid reference", f"{f}: {detail}", field=f,
                   errors=[{"field": f, "message": detail}])


def create_user(conn, body: dict, actor: str) -> tuple[dict, str]:
    from app import users

    try:
        with conn.transaction():
            try:
                user, password = users.create_user(conn, body["username"], body.get("role") or "viewer",
                                                   body.get("password"))
            except ValueError as exc:
                f, _, m = str(exc).partition(": ")
                raise problem(409 if "taken" in m else 422, "conflict" if "taken" in m else "invalid-field",
                              "Invalid user", str(exc), field=f, errors=[{"field": f, "message": m}]) from None
            restricted = _set_grants(conn, "user", "user_id", user.id, body.get("space_ids"), body.get("tenant_ids"))
            conn.execute("UPDATE config.app_user SET restricted = %s, enabled = %s WHERE id = %s",
                         (restricted, body.get("enabled", True) is not False, user.id))
            row = user_row(conn, user.id)
            audit.record(conn, actor, "create", "user", user.id, None, row)
    except psycopg.errors.ForeignKeyViolation as exc:
        raise _grant_problem(exc) from None
    return row, password


def update_user(conn, user_id: int, body: dict, actor: str) -> dict:
    from app import users

    try:
        with conn.transaction():
            old = user_row(conn, user_id)
            if old is None:
                raise problem(404, "not-found", "Not found", f"no user {user_id}")
            demoted = body.get("role") not in (None, "admin") or body.get("enabled") is False
            if old["role"] == "admin" and old["enabled"] and demoted:
                _keep_an_admin(conn, user_id)
            if "role" in body and body["role"] is not None:
                conn.execute("UPDATE config.app_user SET role = %s WHERE id = %s", (body["role"], user_id))
            if "enabled" in body and body["enabled"] is not None:
                conn.execute("UPDATE config.app_user SET enabled = %s WHERE id = %s", (body["enabled"], user_id))
                if not body["enabled"]:
                    users.revoke_all(conn, user_id)
            if body.get("password"):
                try:
                    users.set_password(conn, user_id, body["password"])
                except ValueError as exc:
                    raise problem(422, "invalid-field", "Invalid field", str(exc), field="password") from None
            if body.get("unlock"):
                users.unlock(conn, user_id)
            if "space_ids" in body or "tenant_ids" in body:
                space_ids = body.get("space_ids", old["space_ids"])
                tenant_ids = body.get("tenant_ids", old["tenant_ids"])
                restricted = _set_grants(conn, "user", "user_id", user_id, space_ids, tenant_ids)
                conn.execute("UPDATE config.app_user SET restricted = %s WHERE id = %s", (restricted, user_id))
            row = user_row(conn, user_id)
            audit.record(conn, actor, "update", "user", user_id, old, row)
    except psycopg.errors.ForeignKeyViolation as exc:
        raise _grant_problem(exc) from None
    return row


def delete_user(conn, user_id: int, actor: str) -> None:
    with conn.transaction():
        old = user_row(conn, user_id)
        if old is None:
            raise problem(404, "not-found", "Not found", f"no user {user_id}")
        if old["role"] == "admin" and old["enabled"]:
            _keep_an_admin(conn, user_id)
        conn.execute("DELETE FROM config.app_user WHERE id = %s", (user_id,))
        audit.record(conn, actor, "delete", "user", user_id, old, None)


_KEY_READ = ("id", "name", "prefix", "scopes", "data_source_id", "created_at", "expires_at", "revoked_at",
             "last_used_at", "restricted")


def key_row(conn, key_id: int) -> dict | None:
    row = conn.execute(f"SELECT {', '.join(_KEY_READ)} FROM config.api_key WHERE id = %s", (key_id,)).fetchone()
    if row is None:
        return None
    out = dict(zip(_KEY_READ, row))
    out["scopes"] = list(out["scopes"])
    out["space_ids"] = _grants(conn, "api_key_space", "api_key_id", key_id, "space") if out["restricted"] else None
    out["tenant_ids"] = _grants(conn, "api_key_tenant", "api_key_id", key_id, "tenant") if out["restricted"] else None
    return out


def list_keys(conn, limit: int, offset: int) -> dict:
    ids = [r[0] for r in conn.execute("SELECT id FROM config.api_key ORDER BY id LIMIT %s OFFSET %s",
                                      (limit, offset)).fetchall()]
    total = conn.execute("SELECT count(*) FROM config.api_key").fetchone()[0]
    return {"items": [key_row(conn, i) for i in ids], "total": total, "limit": limit, "offset": offset}


def create_key(conn, body: dict, actor: str) -> tuple[dict, str]:
    from app.apikeys import issue_key

    try:
        with conn.transaction():
            try:
                issued = issue_key(conn, body["name"], body["scopes"], expires_in_days=body.get("expires_in_days"),
                                   data_source_id=body.get("data_source_id"))
            except ValueError as exc:
                f, _, m = str(exc).partition(": ")
                f = "expires_in_days" if f == "expires" else f
                raise problem(422, "invalid-field", "Invalid field", str(exc), field=f,
                              errors=[{"field": f, "message": m}]) from None
            restricted = _set_grants(conn, "api_key", "api_key_id", issued.key.id, body.get("space_ids"),
                                     body.get("tenant_ids"))
            conn.execute("UPDATE config.api_key SET restricted = %s WHERE id = %s", (restricted, issued.key.id))
            row = key_row(conn, issued.key.id)
            audit.record(conn, actor, "create", "api_key", issued.key.id, None, row)
    except psycopg.errors.ForeignKeyViolation as exc:
        detail = exc.diag.message_detail or ""
        if "data_source" in detail:
            raise problem(422, "invalid-reference", "Invalid reference", f"data_source_id: {detail}",
                          field="data_source_id") from None
        raise _grant_problem(exc) from None
    except psycopg.errors.CheckViolation as exc:
        raise problem(422, "invalid-field", "Invalid field", f"name: {exc.diag.message_primary}",
                      field="name") from None
    return row, issued.secret


def revoke_key(conn, key_id: int, actor: str) -> None:
    with conn.transaction():
        old = key_row(conn, key_id)
        if old is None:
            raise problem(404, "not-found", "Not found", f"no API key {key_id}")
        conn.execute("UPDATE config.api_key SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s", (key_id,))
        audit.record(conn, actor, "revoke", "api_key", key_id, old, key_row(conn, key_id))


# --------------------------------------------------------------------- tariffs
def import_tariffs(conn, data, actor: str) -> list[dict]:
    """Validate and store URDB tariffs (one, a list, or {"items": [...]}); all or nothing."""
    from app.tariffs import TariffError, import_tariff

    try:
        with conn.transaction():
            ids = import_tariff(conn, data)
            ids = ids if isinstance(ids, list) else [ids]
            rows = [_fetch(conn, BY_NAME["tariff"], (i,)) for i in ids]
            for row in rows:
                audit.record(conn, actor, "import", "tariff", row["id"], None,
                             {k: row[k] for k in ("id", "label", "name", "version", "valid_from", "valid_to")})
    except TariffError as exc:
        text = str(exc)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [{"field": e.split(": ", 1)[0] if ": " in e else None, "message": e.split(": ", 1)[-1]}
                  for e in lines[1:] or lines]
        raise problem(422, "invalid-tariff", "Invalid tariff", text.splitlines()[0] if text else "invalid tariff",
                      field=errors[0]["field"] if errors else None, errors=errors) from None
    return rows
