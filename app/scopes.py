"""Data scopes: which part of the organisation a user or API key may see.

A `DataScope` names spaces (each with its whole subtree) and tenants. `DataScope()` —
both parts None — is unrestricted. As soon as one part is set the principal is
*restricted*, and a part left as None then grants nothing (a user scoped to tenants only
sees no spaces, not every space).

Visibility rules, one place for the whole API (configuration, live data, reports, exports):

  space               the scope's spaces and every space below them (config.space_closure)
  equipment, combined_equipment, store, shopfloor
                      their space is visible
  tenant              named in the scope, or its space is visible
  meter               linked (config.space_meter) to a visible space — which includes
                      any space below a scoped one — or linked (config.tenant_meter) to a
                      visible tenant
  cost_center         unrestricted principals only, or when it has at least one meter and
                      *every* meter charged to it (config.meter.cost_center_id) is visible:
                      a cost center's totals would otherwise reveal other buildings' energy
  point               it feeds (config.meter_point, any period) a visible meter
  data_source         at least one of its points is visible

Enforcement is in the application, not PostgreSQL row-level security: the report
rollups are TimescaleDB continuous aggregates on the Community edition (materialized
views, which RLS does not cover) and job-refreshed tables on the Apache edition, so one
tested filter here gives the same answer on both editions and for every reader.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

KINDS = (
    "space", "equipment", "combined_equipment", "tenant", "store", "shopfloor",
    "meter", "cost_center", "point", "data_source",
)
_PLACED = ("equipment", "combined_equipment", "store", "shopfloor")


@dataclass(frozen=True)
class DataScope:
    space_ids: frozenset[int] | None = None
    tenant_ids: frozenset[int] | None = None

    @property
    def unrestricted(self) -> bool:
        return self.space_ids is None and self.tenant_ids is None

    @property
    def spaces(self) -> frozenset[int]:
        return self.space_ids or frozenset()

    @property
    def tenants(self) -> frozenset[int]:
        return self.tenant_ids or frozenset()

    def as_dict(self) -> dict:
        return {
            "space_ids": None if self.space_ids is None else sorted(self.space_ids),
            "tenant_ids": None if self.tenant_ids is None else sorted(self.tenant_ids),
        }


UNRESTRICTED = DataScope()


def scope_of(space_ids=None, tenant_ids=None) -> DataScope:
    """A scope from two optional iterables (None: that part not given)."""
    return DataScope(
        None if space_ids is None else frozenset(int(i) for i in space_ids),
        None if tenant_ids is None else frozenset(int(i) for i in tenant_ids),
    )


def expand(conn: psycopg.Connection, scope: DataScope) -> DataScope:
    """The scope with its spaces' subtrees included (tenants unchanged)."""
    if scope.unrestricted:
        return scope
    rows = conn.execute(
        "SELECT DISTINCT space_id FROM config.space_closure WHERE ancestor_id = ANY(%s)",
        (list(scope.spaces),),
    ).fetchall()
    return DataScope(frozenset(r[0] for r in rows), frozenset(scope.tenants))


def _visible_tenants(conn: psycopg.Connection, expanded: DataScope) -> set[int]:
    rows = conn.execute(
        "SELECT id FROM config.tenant WHERE id = ANY(%s) OR space_id = ANY(%s)",
        (list(expanded.tenants), list(expanded.spaces)),
    ).fetchall()
    return {r[0] for r in rows}


def _visible_meters(conn: psycopg.Connection, expanded: DataScope, tenants: set[int]) -> set[int]:
    rows = conn.execute(
        """
        SELECT meter_id FROM config.space_meter WHERE space_id = ANY(%s)
        UNION
        SELECT meter_id FROM config.tenant_meter WHERE tenant_id = ANY(%s)
        """,
        (list(expanded.spaces), list(tenants)),
    ).fetchall()
    return {r[0] for r in rows}


def visible_meter_ids(conn: psycopg.Connection, scope: DataScope) -> set[int] | None:
    """Ids of the meters the scope may see; None when unrestricted (every meter)."""
    return visible_ids(conn, scope, "meter")


def visible_ids(conn: psycopg.Connection, scope: DataScope, kind: str) -> set[int] | None:
    """Ids of the `kind` entities the scope may see; None when unrestricted."""
    if kind not in KINDS:
        raise ValueError(f"unknown entity kind {kind!r} (one of {', '.join(KINDS)})")
    if scope.unrestricted:
        return None
    expanded = expand(conn, scope)
    spaces = list(expanded.spaces)
    if kind == "space":
        return set(expanded.spaces)
    if kind in _PLACED:
        rows = conn.execute(f"SELECT id FROM config.{kind} WHERE space_id = ANY(%s)", (spaces,)).fetchall()
        return {r[0] for r in rows}
    tenants = _visible_tenants(conn, expanded)
    if kind == "tenant":
        return tenants
    meters = _visible_meters(conn, expanded, tenants)
    if kind == "meter":
        return meters
    if kind == "cost_center":
        rows = conn.execute(
            """
            SELECT cost_center_id FROM config.meter WHERE cost_center_id IS NOT NULL
            GROUP BY cost_center_id HAVING bool_and(id = ANY(%s))
            """,
            (list(meters),),
        ).fetchall()
        return {r[0] for r in rows}
    points = {r[0] for r in conn.execute(
        "SELECT DISTINCT point_id FROM config.meter_point WHERE meter_id = ANY(%s)", (list(meters),)
    ).fetchall()}
    if kind == "point":
        return points
    rows = conn.execute(
        "SELECT DISTINCT data_source_id FROM config.point WHERE id = ANY(%s)", (list(points),)
    ).fetchall()
    return {r[0] for r in rows}


def can_see(conn: psycopg.Connection, scope: DataScope, kind: str, entity_id: int) -> bool:
    """Whether the scope may see entity `kind` #`entity_id` (rules in the module doc)."""
    ids = visible_ids(conn, scope, kind)
    return ids is None or int(entity_id) in ids
