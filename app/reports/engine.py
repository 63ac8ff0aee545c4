"""The report engine: one function, `build`, for every entity, metric and granularity.

Steps, each stated once:
1. check the metric applies (entity kind, breakdown, its producer has run) and the
   caller's data scope reaches the entity;
2. widen the period outward to whole buckets of the granularity (reporting zone);
3. resolve the entity's meters (energy.entity_meter: spaces with their counted subtree
   meters, tenants, stores, shopfloors, equipment and combined equipment with their
   input/output meters, cost centers; or one meter) with the breakdown label and unit
   factor of each, in one query;
4. read the coarsest source that fits: the entity daily/monthly rollups for day and
   coarser (energy and cost, breakdown none/category/item, and tou_period for cost), else
   the per-meter hourly/daily/monthly rollups, and 15-minute intervals only for 15min;
   all summing and bucketing is one SQL statement per period;
5. gap-fill against energy.bucket_series (missing buckets are present, value null), and
   add totals, per-m² intensity, peak/base load, the comparison and completeness.

Peak load: the highest mean power (kW) of any bucket at the finest resolution whose
size (meters × buckets) stays under LOAD_BUDGET — 15-minute energy × 4 for short periods,
else hourly energy, else daily energy ÷ hours of the local day. Base load: the 5th
percentile of the same bucket powers over the buckets where every meter has all its
intervals. Both use the input meters whose category unit is Wh, kWh or MWh.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import psycopg

from app.reports import metrics as metric_defs
from app.reports.params import AREA_KINDS, ParamError, ReportParams, comparison_period

LOAD_BUDGET = 50_000                  # meter-buckets read for peak/base load
BASE_PERCENTILE = 0.05
KW_FACTORS = {"Wh": Decimal("0.001"), "kWh": Decimal(1), "MWh": Decimal(1000)}
RESOLUTION = {"15min": "15min", "hour": "hour", "day": "day", "week": "day", "month": "month", "year": "month"}
ENTITY_TABLES = {
    "space": "config.space", "equipment": "config.equipment", "combined_equipment": "config.combined_equipment",
    "tenant": "config.tenant", "store": "config.store", "shopfloor": "config.shopfloor",
    "meter": "config.meter", "cost_center": "config.cost_center",
}
LOAD_DEFINITION = (
    "peak: highest mean power (kW) of any bucket at the stated resolution (15-minute energy x 4 when the "
    f"period is short enough, else hourly, else daily energy / hours of the day); base: {BASE_PERCENTILE:.0%} "
    "percentile of the same bucket powers over buckets where every meter has all its intervals"
)


class ReportError(Exception):
    status = 422
    kind = "invalid-report"
    title = "Invalid report request"

    def __init__(self, detail: str, field: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field


class NotFound(ReportError):
    status, kind, title = 404, "not-found", "Not found"


class Forbidden(ReportError):
    status, kind, title = 403, "forbidden", "Forbidden"


class Unavailable(ReportError):
    status, kind, title = 409, "metric-unavailable", "Metric not available yet"


# ---------------------------------------------------------------------------- helpers
def _num(x: Any) -> float | None:
    return None if x is None else float(x)


def check_scope(conn: psycopg.Connection, scope: Any, kind: str, entity_id: int) -> None:
    """403 unless the data scope (None: unrestricted) reaches the entity."""
    if scope is None:
        return
    from app.scopes import can_see

    if not can_see(conn, scope, kind, entity_id):
        raise Forbidden(f"{kind} {entity_id} is outside your data scope")


def entity_info(conn: psycopg.Connection, kind: str, entity_id: int) -> dict[str, Any]:
    area = "area_m2" if kind in AREA_KINDS else "NULL::numeric"
    row = conn.execute(f"SELECT name, {area} FROM {ENTITY_TABLES[kind]} WHERE id = %s", (entity_id,)).fetchone()
    if row is None:
        raise NotFound(f"no {kind} with id {entity_id}", "id")
    return {"kind": kind, "id": entity_id, "name": row[0], "area_m2": _num(row[1])}


def widen(conn: psycopg.Connection, granularity: str, start: dt.datetime, end: dt.datetime
          ) -> tuple[dt.datetime, dt.datetime, list[tuple[dt.datetime, int]]]:
    """[start, end) widened to whole buckets, and every bucket with its 15-minute intervals."""
    rows = conn.execute(
        "WITH w AS (SELECT energy.bucket_start(%(g)s, %(s)s, reporting_timezone, hour_origin) AS lo, "
        "                  energy.bucket_ceil(%(g)s, %(e)s, reporting_timezone, hour_origin) AS hi "
        "           FROM energy.rollup_setting) "
        "SELECT w.lo, w.hi, b.bucket, b.intervals FROM w "
        "CROSS JOIN LATERAL energy.bucket_series(%(g)s, w.lo, w.hi) b ORDER BY b.bucket",
        {"g": granularity, "s": start, "e": end},
    ).fetchall()
    if not rows:
        raise ParamError("to", "the period holds no bucket")
    return rows[0][0], rows[0][1], [(r[2], r[3]) for r in rows]


_CONTEXT = """
SELECT s.reporting_timezone, s.hour_origin, e.name, e.area, to_regclass(%(req)s) IS NOT NULL,
       CASE WHEN %(cur)s THEN (SELECT coalesce(string_agg(DISTINCT currency, '/'), '') FROM config.tariff) END,
       w.lo, w.hi, b.buckets, b.intervals, e.found
FROM energy.rollup_setting s
LEFT JOIN (SELECT name, {area} AS area, true AS found FROM {table} WHERE id = %(eid)s) e ON true
CROSS JOIN LATERAL (SELECT energy.bucket_start(%(g)s, %(s)s, s.reporting_timezone, s.hour_origin) AS lo,
                           energy.bucket_ceil(%(g)s, %(e)s, s.reporting_timezone, s.hour_origin) AS hi) w
CROSS JOIN LATERAL (SELECT array_agg(x.bucket ORDER BY x.bucket) AS buckets,
                           array_agg(x.intervals ORDER BY x.bucket) AS intervals
                    FROM energy.bucket_series(%(g)s, w.lo, w.hi) x) b
"""


def context(conn: psycopg.Connection, p: ReportParams, metric: metric_defs.Metric) -> dict[str, Any]:
    """In one query: the reporting zone and hour origin, the entity's name and area, whether
    the metric's source exists, the currency, and the widened period with its buckets."""
    area = "area_m2" if p.entity in AREA_KINDS else "NULL::numeric"
    row = conn.execute(
        _CONTEXT.format(area=area, table=ENTITY_TABLES[p.entity]),
        {"req": metric.requires or "pg_catalog.pg_class", "cur": metric.unit == "currency", "eid": p.entity_id,
         "g": p.granularity, "s": p.start, "e": p.end},
    ).fetchone()
    if row is None:
        raise Unavailable("the rollups are not built: run the migrations")
    zone, origin, name, area_m2, available, currency, lo, hi, buckets, intervals, found = row
    if not found:
        raise NotFound(f"no {p.entity} with id {p.entity_id}", "id")
    if not available:
        raise Unavailable(f"the {metric.name} metric has no data yet: its stage has not run "
                          f"({metric.requires} is missing)")
    if not buckets:
        raise ParamError("to", "the period holds no bucket")
    return {"zone": zone, "origin": origin, "currency": currency, "lo": lo, "hi": hi,
            "buckets": list(zip(buckets, intervals)),
            "entity": {"kind": p.entity, "id": p.entity_id, "name": name, "area_m2": _num(area_m2)}}


_MEMBERS = """
WITH em AS (
    SELECT meter_id, direction FROM energy.entity_meter WHERE entity_kind = %(kind)s AND entity_id = %(eid)s
    UNION ALL
    SELECT id, 'input' FROM config.meter WHERE %(kind)s = 'meter' AND id = %(eid)s
), kids AS MATERIALIZED (
    SELECT cl.space_id, s.name FROM config.space s JOIN config.space_closure cl ON cl.ancestor_id = s.id
    WHERE %(by)s = 'child' AND %(kind)s = 'space' AND s.parent_id = %(eid)s
), parts AS MATERIALIZED (
    SELECT x.meter_id, e.name FROM config.combined_equipment_member cm
    JOIN config.equipment_meter x USING (equipment_id) JOIN config.equipment e ON e.id = cm.equipment_id
    WHERE %(by)s = 'child' AND %(kind)s = 'combined_equipment' AND cm.combined_equipment_id = %(eid)s
)
SELECT em.meter_id, em.direction, m.category_id, c.name, c.unit,
       CASE WHEN %(kgce)s THEN c.kgce_factor ELSE 1 END AS factor,
       CASE %(by)s
           WHEN 'category' THEN c.name
           WHEN 'item' THEN coalesce(i.name, '(no item)')
           WHEN 'child' THEN CASE %(kind)s
               WHEN 'space' THEN coalesce((SELECT min(k.name) FROM config.space_meter sm JOIN kids k
                                           ON k.space_id = sm.space_id WHERE sm.meter_id = em.meter_id),
                                          '(this space)')
               WHEN 'combined_equipment' THEN coalesce((SELECT min(p.name) FROM parts p
                                                        WHERE p.meter_id = em.meter_id), '(own meters)')
               ELSE m.name END
           ELSE '' END AS grp
FROM em
JOIN config.meter m ON m.id = em.meter_id
JOIN config.energy_category c ON c.id = m.category_id
LEFT JOIN config.energy_item i ON i.id = m.item_id
WHERE %(cat)s::text IS NULL OR m.category_id::text = %(cat)s OR lower(c.name) = lower(%(cat)s)
ORDER BY em.meter_id, em.direction
"""


def members(conn: psycopg.Connection, p: ReportParams) -> list[tuple]:
    if p.category is not None and not conn.execute(
        "SELECT 1 FROM config.energy_category WHERE id::text = %(c)s OR lower(name) = lower(%(c)s)",
        {"c": p.category},
    ).fetchone():
        raise ParamError("category", f"no energy category {p.category!r}")
    return conn.execute(_MEMBERS, {"kind": p.entity, "eid": p.entity_id, "by": p.by or "",
                                   "kgce": p.unit == "kgce", "cat": p.category}).fetchall()


def bucket_sql(granularity: str, resolution: str, col: str) -> str:
    """SQL grouping a source's bucket column into the report's buckets (mirrors energy.bucket_start)."""
    if granularity == resolution:
        return col
    if granularity == "hour":
        return f"time_bucket(INTERVAL '1 hour', {col}, origin => %(origin)s)"
    if granularity == "year":
        return f"date_trunc('year', {col}, %(zone)s)"
    return f"time_bucket(INTERVAL '1 {granularity}', {col}, %(zone)s)"


# ----------------------------------------------------------------------------- engine
def check(p: ReportParams, m: metric_defs.Metric) -> None:
    """The metric applies to this entity kind, breakdown and unit."""
    if p.entity not in m.kinds:
        raise ParamError("entity", f"the {m.name} metric applies to {', '.join(m.kinds)}, not {p.entity}")
    if p.by is not None and p.by not in m.breakdowns:
        allowed = ", ".join(m.breakdowns) or "none"
        raise ParamError("by", f"the {m.name} metric breaks down by {allowed}, not {p.by}")
    if p.unit == "kgce" and m.unit != "category":
        raise ParamError("unit", f"the {m.name} metric is in {m.unit}: unit=kgce applies to energy only")


class _Plan:
    """What one report reads: the metric, its resolution and source, and the meters."""

    def __init__(self, conn: psycopg.Connection, p: ReportParams):
        self.p = p
        self.metric = metric_defs.METRICS[p.metric]
        m = self.metric
        check(p, m)
        self.ctx = context(conn, p, m)
        self.zone, self.origin = self.ctx["zone"], self.ctx["origin"]
        self.members = members(conn, p)
        self.resolution = RESOLUTION[p.granularity]
        self.entity_path = (p.entity != "meter" and p.by in (None, "category", "item", "tou_period")
                            and m.source(self.resolution, True) is not None)
        rel = self.members if m.ratio else [r for r in self.members if r[1] == "input"]
        self.counted = len(rel)
        self.unit = self._unit()

    def _unit(self) -> str:
        m, p = self.metric, self.p
        if m.unit == "currency":
            return self.ctx["currency"]
        if m.unit != "category":
            return m.unit
        if p.unit == "kgce":
            return "kgce"
        units = {d: sorted({r[4] for r in self.members if r[1] == d}) for d in ("input", "output")}
        if m.ratio:
            return f"{'+'.join(units['output']) or '-'}/{'+'.join(units['input']) or '-'}"
        cats = sorted({r[3] for r in self.members if r[1] == "input"})
        if len(cats) > 1 and p.by != "category":
            raise ParamError("category", f"this {p.entity} has meters of several energy categories "
                                         f"({', '.join(cats)}): choose one with category=…, or unit=kgce")
        if len(cats) > 1 and len(units["input"]) > 1:
            raise ParamError("unit", f"categories with different units ({', '.join(units['input'])}) "
                                     "sum only as unit=kgce")
        return units["input"][0] if units["input"] else ""

    def aggregate(self, conn: psycopg.Connection, lo: dt.datetime, hi: dt.datetime) -> list[tuple]:
        """Rows (bucket, direction, group, value, valued) for [lo, hi): one SQL statement."""
        p, m = self.p, self.metric
        args = {"lo": lo, "hi": hi, "zone": self.zone, "origin": self.origin}
        if self.entity_path:
            args.update(kind=p.entity, eid=p.entity_id, cats=sorted({r[2] for r in self.members}))
            grp = {"category": "c.name", "item": "coalesce(i.name, '(no item)')",
                   "tou_period": "coalesce(f.period::text, '(no period)')"}.get(p.by, "''")
            factor = "c.kgce_factor" if p.unit == "kgce" else "1"
            sql = (f"SELECT {bucket_sql(p.granularity, self.resolution, 'f.bucket')} AS b, f.direction, "
                   f"{grp} AS grp, sum(f.v * {factor}) AS v, sum(f.valued)::bigint AS valued "
                   f"FROM ({m.source(self.resolution, True)}) f "
                   "JOIN config.energy_category c ON c.id = f.category_id "
                   "LEFT JOIN config.energy_item i ON i.id = f.item_id GROUP BY 1, 2, 3")
        else:
            if not self.members:
                return []
            args.update(ids=[r[0] for r in self.members], dirs=[r[1] for r in self.members],
                        grps=[r[6] for r in self.members], factors=[r[5] for r in self.members])
            grp = "coalesce(f.period::text, '(no period)')" if p.by == "tou_period" else "m.grp"
            sql = ("WITH m AS (SELECT * FROM unnest(%(ids)s::int[], %(dirs)s::text[], %(grps)s::text[], "
                   "%(factors)s::numeric[]) AS m(meter_id, direction, grp, factor)) "
                   f"SELECT {bucket_sql(p.granularity, self.resolution, 'f.bucket')} AS b, m.direction, "
                   f"{grp} AS grp, sum(f.v * m.factor) AS v, sum(f.valued)::bigint AS valued "
                   f"FROM ({m.source(self.resolution, False)}) f JOIN m USING (meter_id) GROUP BY 1, 2, 3")
        return conn.execute(sql, args).fetchall()

    def source_name(self) -> str:
        src = self.metric.source(self.resolution, self.entity_path) or ""
        return src.split(" FROM ", 1)[1].split()[0] if " FROM " in src else ""

    def series(self, rows: list[tuple], buckets: list[tuple[dt.datetime, int]]) -> tuple[list[dict], dict]:
        """Gap-filled points and totals from aggregated rows (a loop over buckets, not meters)."""
        ratio = self.metric.ratio
        by_bucket: dict[dt.datetime, list[tuple]] = {}
        for r in rows:
            by_bucket.setdefault(r[0], []).append(r)
        points, groups_total = [], {}
        tot_in = tot_out = Decimal(0)
        any_in = any_out = False
        present_total = expected_total = 0
        for bucket, intervals in buckets:
            rs = by_bucket.get(bucket, [])
            expected = self.counted * intervals
            present = sum(r[4] for r in rs if ratio or r[1] == "input")
            vin = [r[3] for r in rs if r[1] == "input" and r[3] is not None]
            vout = [r[3] for r in rs if r[1] == "output" and r[3] is not None]
            if ratio:
                value = (sum(vout) / sum(vin)) if vin and vout and sum(vin) != 0 else None
                if vin and vout:
                    tot_in += sum(vin)
                    tot_out += sum(vout)
                    any_in = any_out = True
                groups = None
            else:
                value = sum(vin) if vin else None
                if vin:
                    tot_in += value
                    any_in = True
                groups = None
                if self.p.by:
                    groups = {}
                    for r in rs:
                        if r[1] == "input" and r[3] is not None:
                            groups[r[2]] = groups.get(r[2], Decimal(0)) + r[3]
                            groups_total[r[2]] = groups_total.get(r[2], Decimal(0)) + r[3]
            present_total += present
            expected_total += expected
            point = {"bucket": bucket, "value": _num(value), "expected": expected, "present": present}
            if groups is not None:
                point["groups"] = {k: float(v) for k, v in groups.items()}
            points.append(point)
        if ratio:
            total = (tot_out / tot_in) if any_in and any_out and tot_in != 0 else None
        else:
            total = tot_in if any_in else None
        totals = {
            "value": _num(total),
            "input": _num(tot_in) if ratio and any_in else None,
            "output": _num(tot_out) if ratio and any_out else None,
            "expected": expected_total, "present": present_total,
            "completeness": round(present_total / expected_total, 6) if expected_total else None,
            "groups": groups_total,
        }
        return points, totals

    def load(self, conn: psycopg.Connection, lo: dt.datetime, hi: dt.datetime) -> dict | None:
        """Peak and base load in kW (see the module docs), or None when it does not apply."""
        if not self.metric.load:
            return None
        mm = [r for r in self.members if r[1] == "input" and r[4] in KW_FACTORS]
        if not mm:
            return None
        quarters = (hi - lo).total_seconds() / 900
        res = "day"
        for candidate, per in (("15min", 1), ("hour", 4)):
            if len(mm) * quarters / per <= LOAD_BUDGET:
                res = candidate
                break
        args = {"lo": lo, "hi": hi, "zone": self.zone, "n": len(mm), "pct": BASE_PERCENTILE}
        if res == "day" and self.p.entity != "meter":
            # Daily power of an entity: its daily rollup already sums the meters.
            kw = {r[2]: KW_FACTORS[r[4]] for r in mm}
            args.update(kind=self.p.entity, eid=self.p.entity_id, cats=list(kw), kw=list(kw.values()))
            source = ("SELECT e.bucket, e.energy * k.kw AS v, e.valued FROM energy.entity_daily e "
                      "JOIN unnest(%(cats)s::int[], %(kw)s::numeric[]) AS k(category_id, kw) USING (category_id) "
                      "WHERE e.entity_kind = %(kind)s AND e.entity_id = %(eid)s AND e.direction = 'input' "
                      "AND e.bucket >= %(lo)s AND e.bucket < %(hi)s")
        else:
            args.update(ids=[r[0] for r in mm], kw=[KW_FACTORS[r[4]] for r in mm])
            source = ("SELECT f.bucket, f.v * m.kw AS v, f.valued "
                      "FROM (" + metric_defs.METRICS["energy"].source(res, False) + ") f "
                      "JOIN unnest(%(ids)s::int[], %(kw)s::numeric[]) AS m(meter_id, kw) USING (meter_id)")
        hours = {"15min": "0.25", "hour": "1"}.get(
            res, "extract(epoch FROM (((f.bucket AT TIME ZONE %(zone)s) + INTERVAL '1 day') "
                 "AT TIME ZONE %(zone)s) - f.bucket) / 3600")
        row = conn.execute(
            "WITH x AS (SELECT f.bucket, sum(f.v) / max(" + hours + ") AS p, "
            "                  sum(f.valued) >= %(n)s * max(" + hours + ") * 4 AS complete "
            "           FROM (" + source + ") f GROUP BY f.bucket HAVING count(f.v) > 0) "
            "SELECT max(p), (array_agg(bucket ORDER BY p DESC))[1], "
            "       percentile_cont(%(pct)s) WITHIN GROUP (ORDER BY p) FILTER (WHERE complete) FROM x",
            args,
        ).fetchone()
        return {"peak_kw": _num(row[0]), "peak_at": row[1], "base_kw": _num(row[2]), "resolution": res,
                "meters": len(mm), "definition": LOAD_DEFINITION}


def build(conn: psycopg.Connection, p: ReportParams, scope: Any = None) -> dict[str, Any]:
    """The report as a plain dict (JSON-ready but for datetimes); see the module docs."""
    check_scope(conn, scope, p.entity, p.entity_id)
    plan = _Plan(conn, p)
    entity, lo, hi, buckets = plan.ctx["entity"], plan.ctx["lo"], plan.ctx["hi"], plan.ctx["buckets"]
    points, totals = plan.series(plan.aggregate(conn, lo, hi), buckets)
    groups_total = totals.pop("groups")
    breakdown = None
    if p.by:
        whole = sum(groups_total.values()) if groups_total else Decimal(0)
        breakdown = {"by": p.by, "groups": [
            {"key": k, "value": float(v), "share": round(float(v / whole), 6) if whole else None}
            for k, v in sorted(groups_total.items(), key=lambda kv: -kv[1])
        ]}
    intensity = None
    if entity["area_m2"] and totals["value"] is not None and not plan.metric.ratio:
        intensity = {"value": totals["value"] / entity["area_m2"], "unit": f"{plan.unit}/m²",
                     "area_m2": entity["area_m2"]}
    comparison = None
    if p.compare:
        cs, ce = comparison_period(p.compare, lo, hi, plan.zone)
        clo, chi, cbuckets = widen(conn, p.granularity, cs, ce)
        cpoints, ctotals = plan.series(plan.aggregate(conn, clo, chi), cbuckets)
        base, now = ctotals["value"], totals["value"]
        comparison = {
            "kind": p.compare, "from": clo, "to": chi, "total": base,
            "change": (now - base) if now is not None and base is not None else None,
            "change_pct": round((now - base) / base * 100, 4) if now is not None and base else None,
            "completeness": ctotals["completeness"],
            "series": [{"bucket": c["bucket"], "value": c["value"]} for c in cpoints],
        }
    return {
        "metric": plan.metric.name, "title": plan.metric.title, "unit": plan.unit,
        "entity": entity, "granularity": p.granularity, "timezone": plan.zone,
        "period": {"from": lo, "to": hi, "requested_from": p.start, "requested_to": p.end},
        "source": plan.source_name(), "meters": plan.counted,
        "series": points,
        "totals": totals,
        "breakdown": breakdown,
        "intensity": intensity,
        "load": plan.load(conn, lo, hi),
        "comparison": comparison,
        "completeness": {"expected": totals["expected"], "present": totals["present"],
                         "ratio": totals["completeness"],
                         "definition": "15-minute intervals with a value over intervals expected "
                                       "(meters x intervals in the period)"},
    }
