"""Emission factors and grid intensity series: reading them from files, checking them
whole, storing them; and keeping the carbon rollups in step with the energy rollups.

A factor file is validated completely against itself and the database before anything
is written, so a bad file changes nothing and every problem is reported with its row,
field and value. The rules that turn energy into carbon live in SQL
(the view carbon.meter_emission and the rollup refresh in sql/carbon.sql) and are
stated in docs/carbon.md.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Sequence
from zoneinfo import ZoneInfo

import psycopg
import yaml

from app.db import INFINITY, NEG_INFINITY, connect
from app.rollups import widen

BASES = ("location", "market")
SCOPES = (1, 2, 3)
FACTOR_FIELDS = ("category", "region", "basis", "scope", "valid_from", "valid_to",
                 "kgco2e_per_unit", "unit", "source")
INTENSITY_FIELDS = ("region", "category", "basis", "start", "minutes", "kgco2e_per_kwh", "source")
MAX_REPORTED = 50


class CarbonFileError(ValueError):
    """A factor or intensity file that cannot be imported; lists every problem found."""

    def __init__(self, errors: list[str], source: str):
        self.errors = errors
        self.source = source
        shown = errors[:MAX_REPORTED]
        more = f"\n  … and {len(errors) - MAX_REPORTED} more" if len(errors) > MAX_REPORTED else ""
        super().__init__(f"{source}: {len(errors)} problem(s), nothing imported:\n  " + "\n  ".join(shown) + more)


@dataclass
class ImportReport:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    regions_created: list[str] = field(default_factory=list)

    def summary(self) -> str:
        created = f", regions created: {', '.join(self.regions_created)}" if self.regions_created else ""
        return f"{self.inserted} inserted, {self.updated} updated, {self.unchanged} unchanged{created}"


# ------------------------------------------------------------------------ parsing
def _read_csv(text: str, source: str, fields: Sequence[str], required: Sequence[str]) -> list[tuple[str, dict]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    errors = [f"header: unknown column {h!r} (expected some of {', '.join(fields)})" for h in header if h not in fields]
    errors += [f"header: missing column {f!r}" for f in required if f not in header]
    if errors:
        raise CarbonFileError(errors, source)
    rows = []
    for n, raw in enumerate(reader, start=2):
        values = {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k is not None}
        if None in raw:
            raise CarbonFileError([f"row {n}: more values than columns"], source)
        if all(v in ("", None) for v in values.values()):
            continue
        rows.append((f"row {n}", values))
    return rows


def read_factor_file(path: Path) -> list[tuple[str, dict]]:
    """(where, fields) per factor from a .csv, or a .yaml/.yml holding `factors:` (or a list)."""
    text = Path(path).read_text(encoding="utf-8-sig")
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        return parse_factor_yaml(text, str(path))
    return parse_factor_csv(text, str(path))


def parse_factor_csv(text: str, source: str = "factor file") -> list[tuple[str, dict]]:
    return _read_csv(text, source, FACTOR_FIELDS, ("category", "basis", "scope", "kgco2e_per_unit", "source"))


def parse_factor_yaml(text: str, source: str = "factor file") -> list[tuple[str, dict]]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CarbonFileError([f"not valid YAML: {exc}"], source) from None
    items = doc.get("factors") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise CarbonFileError(["expected a list of factors (or a mapping with `factors:`)"], source)
    rows, errors = [], []
    for i, item in enumerate(items):
        where = f"factors[{i}]"
        if not isinstance(item, dict):
            errors.append(f"{where}: expected a mapping, got {item!r}")
            continue
        unknown = [k for k in item if k not in FACTOR_FIELDS]
        errors += [f"{where}: unknown field {k!r}" for k in unknown]
        rows.append((where, {k: ("" if v is None else v) for k, v in item.items()}))
    if errors:
        raise CarbonFileError(errors, source)
    return rows


def _instant(value: Any, zone: ZoneInfo, *, naive_ok: bool = True) -> dt.datetime:
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime.combine(value, dt.time())
    else:
        parsed = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        if not naive_ok:
            raise ValueError("has no UTC offset (write e.g. 2025-01-01T00:00Z or +01:00)")
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(dt.timezone.utc)


def _number(value: Any) -> Decimal:
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError("is not a number") from None
    if not number.is_finite():
        raise ValueError("is not a finite number")
    if number < 0:
        raise ValueError("is negative")
    return number


def _reporting_zone(conn: psycopg.Connection) -> ZoneInfo:
    row = conn.execute("SELECT reporting_timezone FROM energy.rollup_setting").fetchone()
    if row:
        return ZoneInfo(row[0])
    from app.settings import get_settings

    return ZoneInfo(get_settings().reporting_timezone)


def _lookup(conn: psycopg.Connection) -> tuple[dict[str, tuple[int, str]], dict[str, int]]:
    categories = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT name, id, unit FROM config.energy_category")}
    regions = {r[0]: r[1] for r in conn.execute("SELECT name, id FROM config.carbon_region")}
    return categories, regions


# ---------------------------------------------------------------------- factors
@dataclass
class _Factor:
    where: str
    category_id: int
    category: str
    region: str | None
    basis: str
    scope: int
    valid_from: dt.datetime
    valid_to: dt.datetime
    kgco2e_per_unit: Decimal
    source: str

    def key(self) -> tuple:
        return (self.category_id, self.region, self.basis, self.valid_from)

    def label(self) -> str:
        return f"{self.category}/{self.region or '(any region)'}/{self.basis}"


def _fmt(ts: dt.datetime) -> str:
    return "-infinity" if ts == NEG_INFINITY else "infinity" if ts == INFINITY else ts.isoformat()


def validate_factors(conn: psycopg.Connection, rows: list[tuple[str, dict]], source: str) -> list[_Factor]:
    """Every row checked, then the file and the stored factors checked together (no
    overlapping validity per category/region/basis, one scope per category). Raises
    CarbonFileError naming row, field and value."""
    categories, _ = _lookup(conn)
    zone = _reporting_zone(conn)
    errors: list[str] = []
    factors: list[_Factor] = []
    for where, v in rows:
        bad = len(errors)

        def err(fieldname: str, problem: str) -> None:
            errors.append(f"{where}, field {fieldname}: {v.get(fieldname)!r} {problem}")

        category = str(v.get("category", "")).strip()
        if not category:
            err("category", "is empty")
        elif category not in categories:
            err("category", f"is not a known energy category (known: {', '.join(sorted(categories)) or 'none'})")
        region = str(v.get("region", "") or "").strip() or None
        basis = str(v.get("basis", "")).strip().lower()
        if basis not in BASES:
            err("basis", "must be location or market")
        scope = None
        try:
            scope = int(str(v.get("scope", "")).strip())
            if scope not in SCOPES:
                raise ValueError
        except ValueError:
            err("scope", "must be 1 (fuels burned on site), 2 (purchased electricity, heat, steam, cooling) or 3")
        bounds = []
        for name, default in (("valid_from", NEG_INFINITY), ("valid_to", INFINITY)):
            raw = v.get(name, "")
            if raw in ("", None):
                bounds.append(default)
                continue
            try:
                bounds.append(_instant(raw, zone))
            except ValueError as exc:
                err(name, str(exc) if "offset" in str(exc) else "is not a date or ISO 8601 time")
                bounds.append(default)
        if bounds[0] >= bounds[1] and len(errors) == bad:
            errors.append(f"{where}, field valid_to: {v.get('valid_to')!r} is not after valid_from {v.get('valid_from')!r}")
        try:
            value = _number(v.get("kgco2e_per_unit", ""))
        except ValueError as exc:
            err("kgco2e_per_unit", str(exc))
            value = None
        unit = str(v.get("unit", "") or "").strip()
        if unit and category in categories and unit != f"kgCO2e/{categories[category][1]}":
            err("unit", f"does not match the category's unit: factors are in kgCO2e/{categories[category][1]}")
        src = str(v.get("source", "") or "").strip()
        if not src:
            err("source", "is empty: name the publication the factor comes from")
        if len(errors) == bad:
            factors.append(_Factor(where, categories[category][0], category, region, basis, scope,
                                   bounds[0], bounds[1], value, src))
    if errors:
        raise CarbonFileError(errors, source)

    # The state after the import: stored factors not replaced by the file, plus the file.
    stored = conn.execute(
        "SELECT f.category_id, c.name, r.name, f.basis, f.scope, f.valid_from, f.valid_to, f.id "
        "FROM config.emission_factor f JOIN config.energy_category c ON c.id = f.category_id "
        "LEFT JOIN config.carbon_region r ON r.id = f.region_id"
    ).fetchall()
    keys = {}
    for f in factors:
        if f.key() in keys:
            errors.append(f"{f.where}: repeats {keys[f.key()].where} ({f.label()} from {_fmt(f.valid_from)})")
        keys[f.key()] = f
    final = list(factors) + [
        _Factor(f"stored factor #{s[7]}", s[0], s[1], s[2], s[3], s[4], s[5], s[6], Decimal(0), "")
        for s in stored if (s[0], s[2], s[3], s[5]) not in keys
    ]
    by_key: dict[tuple, list[_Factor]] = {}
    for f in final:
        by_key.setdefault((f.category_id, f.region, f.basis), []).append(f)
    for group in by_key.values():
        group.sort(key=lambda f: f.valid_from)
        for a, b in zip(group, group[1:]):
            if b.valid_from < a.valid_to:
                first, second = (a, b) if not b.where.startswith("row") and not b.where.startswith("factors") else (b, a)
                errors.append(f"{first.where}: {first.label()} [{_fmt(first.valid_from)}, {_fmt(first.valid_to)}) "
                              f"overlaps {second.where} [{_fmt(second.valid_from)}, {_fmt(second.valid_to)})")
    scopes: dict[int, _Factor] = {}
    for f in final:
        other = scopes.setdefault(f.category_id, f)
        if other.scope != f.scope:
            mine = f if not f.where.startswith("stored") else other
            theirs = other if mine is f else f
            errors.append(f"{mine.where}, field scope: {mine.scope!r} differs from scope {theirs.scope} of "
                          f"{theirs.where} for category {f.category}: a category belongs to one scope")
    if errors:
        raise CarbonFileError(errors, source)
    return factors


def _region_ids(conn: psycopg.Connection, names: set[str], report: ImportReport) -> dict[str, int]:
    _, regions = _lookup(conn)
    for name in sorted(names - regions.keys()):
        (regions[name],) = conn.execute(
            "INSERT INTO config.carbon_region (name) VALUES (%s) RETURNING id", (name,)
        ).fetchone()
        report.regions_created.append(name)
    return regions


def import_factors(conn: psycopg.Connection, rows: list[tuple[str, dict]], source: str = "factor file") -> ImportReport:
    """Validate every row, then upsert by (category, region, basis, valid_from) in the
    caller's transaction. Regions named for the first time are created."""
    factors = validate_factors(conn, rows, source)
    report = ImportReport()
    regions = _region_ids(conn, {f.region for f in factors if f.region}, report)
    for f in factors:
        row = conn.execute(
            """
            INSERT INTO config.emission_factor AS e
                (category_id, region_id, basis, scope, valid_from, valid_to, kgco2e_per_unit, source)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (category_id, (coalesce(region_id, 0)), basis, valid_from) DO UPDATE
                SET scope = EXCLUDED.scope, valid_to = EXCLUDED.valid_to,
                    kgco2e_per_unit = EXCLUDED.kgco2e_per_unit, source = EXCLUDED.source
                WHERE (e.scope, e.valid_to, e.kgco2e_per_unit, e.source)
                      IS DISTINCT FROM (EXCLUDED.scope, EXCLUDED.valid_to, EXCLUDED.kgco2e_per_unit, EXCLUDED.source)
            RETURNING (xmax = 0)
            """,
            (f.category_id, regions.get(f.region) if f.region else None, f.basis, f.scope,
             f.valid_from, f.valid_to, f.kgco2e_per_unit, f.source),
        ).fetchone()
        if row is None:
            report.unchanged += 1
        elif row[0]:
            report.inserted += 1
        else:
            report.updated += 1
    conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # surface any conflict here, not at commit
    return report


def import_factor_file(path: Path, url: str | None = None) -> ImportReport:
    rows = read_factor_file(path)
    with connect(url) as conn:
        return import_factors(conn, rows, str(path))


# -------------------------------------------------------------------- intensity
def import_intensity(conn: psycopg.Connection, rows: list[tuple[str, dict]],
                     source: str = "intensity file") -> ImportReport:
    """Validate a grid intensity series whole (kgCO2e/kWh per period of 15, 30 or 60
    minutes, start times with an explicit offset), then upsert it in one statement."""
    categories, _ = _lookup(conn)
    errors: list[str] = []
    good: list[tuple] = []
    seen: dict[tuple, tuple[str, dt.datetime]] = {}
    for where, v in rows:
        bad = len(errors)

        def err(fieldname: str, problem: str) -> None:
            errors.append(f"{where}, field {fieldname}: {v.get(fieldname)!r} {problem}")

        region = (v.get("region") or "").strip()
        if not region:
            err("region", "is empty")
        category = (v.get("category") or "").strip()
        if category not in categories:
            err("category", f"is not a known energy category (known: {', '.join(sorted(categories)) or 'none'})")
        elif categories[category][1] != "kWh":
            err("category", f"is measured in {categories[category][1]!r}: a grid intensity series is kgCO2e/kWh "
                            "and applies to categories measured in kWh")
        basis = (v.get("basis") or "").strip().lower()
        if basis not in BASES:
            err("basis", "must be location or market")
        start = None
        try:
            start = _instant(v.get("start", ""), dt.timezone.utc, naive_ok=False)
            if int(start.timestamp()) % 900 or start.microsecond:
                err("start", "is not on a 15-minute boundary")
        except ValueError as exc:
            err("start", str(exc) if "offset" in str(exc) else "is not an ISO 8601 time")
        minutes = (v.get("minutes") or "60").strip()
        if minutes not in ("15", "30", "60"):
            err("minutes", "must be 15, 30 or 60")
        try:
            value = _number(v.get("kgco2e_per_kwh", ""))
        except ValueError as exc:
            err("kgco2e_per_kwh", str(exc))
        if len(errors) > bad:
            continue
        end = start + dt.timedelta(minutes=int(minutes))
        key = (region, category, basis)
        good.append((region, categories[category][0], basis, start, end, value,
                     (v.get("source") or "").strip() or None, where, key))
    series: dict[tuple, list] = {}
    for g in good:
        series.setdefault(g[8], []).append(g)
    for items in series.values():
        items.sort(key=lambda g: g[3])
        for a, b in zip(items, items[1:]):
            if b[3] < a[4]:
                errors.append(f"{b[7]}, field start: {b[3].isoformat()} overlaps {a[7]} "
                              f"[{a[3].isoformat()}, {a[4].isoformat()}) of the same region, category and basis")
    if errors:
        raise CarbonFileError(errors, source)
    report = ImportReport()
    regions = _region_ids(conn, {g[0] for g in good}, report)
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS grid_intensity_staging (LIKE carbon.grid_intensity) ON COMMIT DELETE ROWS"
    )
    with conn.cursor().copy(
        "COPY grid_intensity_staging (region_id, category_id, basis, ts, ts_end, kgco2e_per_kwh, source) FROM STDIN"
    ) as copy:
        for g in good:
            copy.write_row((regions[g[0]], g[1], g[2], g[3], g[4], g[5], g[6]))
    counts = conn.execute(
        """
        WITH up AS (
            INSERT INTO carbon.grid_intensity AS g
            SELECT * FROM grid_intensity_staging
            ON CONFLICT (region_id, category_id, basis, ts) DO UPDATE
                SET ts_end = EXCLUDED.ts_end, kgco2e_per_kwh = EXCLUDED.kgco2e_per_kwh, source = EXCLUDED.source
                WHERE (g.ts_end, g.kgco2e_per_kwh, g.source)
                      IS DISTINCT FROM (EXCLUDED.ts_end, EXCLUDED.kgco2e_per_kwh, EXCLUDED.source)
            RETURNING (xmax = 0) AS inserted
        )
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up
        """
    ).fetchone()
    conn.execute("TRUNCATE grid_intensity_staging")
    try:
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
    except psycopg.errors.ExclusionViolation as exc:
        raise CarbonFileError([f"overlaps a stored period: {exc.diag.message_detail}"], source) from None
    report.inserted, report.updated = counts
    report.unchanged = len(good) - report.inserted - report.updated
    return report


def import_intensity_file(path: Path, url: str | None = None) -> ImportReport:
    text = Path(path).read_text(encoding="utf-8-sig")
    rows = _read_csv(text, str(path), INTENSITY_FIELDS, ("region", "category", "basis", "start", "kgco2e_per_kwh"))
    with connect(url) as conn:
        return import_intensity(conn, rows, str(path))


# ---------------------------------------------------------------------- regions
def set_region(conn: psycopg.Connection, region: str | None, *, meter: str | None = None,
               space_id: int | None = None) -> None:
    """Give a meter (by name) or a space (by id) a grid region (None: clear it); the
    region is created if new. Triggers mark the affected history for recomputation."""
    if (meter is None) == (space_id is None):
        raise ValueError("name exactly one of meter or space")
    region_id = None
    if region:
        region_id = _region_ids(conn, {region}, ImportReport())[region]
    if meter is not None:
        cur = conn.execute("UPDATE config.meter SET grid_region_id = %s WHERE name = %s", (region_id, meter))
        what = f"meter {meter!r}"
    else:
        cur = conn.execute("UPDATE config.space SET grid_region_id = %s WHERE id = %s", (region_id, space_id))
        what = f"space {space_id}"
    if cur.rowcount != 1:
        raise ValueError(f"no {what}")


# ---------------------------------------------------------------------- rollups
def rollups_in_step(conn: psycopg.Connection) -> bool:
    """Whether the carbon rollups are built in the energy rollups' zone and origin."""
    row = conn.execute(
        "SELECT (c.reporting_timezone, c.hour_origin) = (e.reporting_timezone, e.hour_origin) "
        "FROM energy.rollup_setting e LEFT JOIN carbon.rollup_setting c ON true"
    ).fetchone()
    return bool(row and row[0])


def rebuild_rollups(conn: psycopg.Connection) -> int:
    """Rebuild the carbon rollups in the energy rollups' zone and refill them over the
    whole history (the energy rollups must be filled: the hourly one is read)."""
    conn.execute("SELECT carbon.build_meter_rollups()")
    return refresh_rollups(conn, None, None)


def refresh_rollups(conn: psycopg.Connection, start: dt.datetime | None, end: dt.datetime | None,
                    meter_ids: Sequence[int] | None = None) -> int:
    """Hourly, daily, monthly carbon rollups over [start, end) widened to whole buckets
    (None: unbounded), in that order (days read hours, months read days). Returns the
    15-minute intervals the recomputed hours cover."""
    ids = list(meter_ids) if meter_ids is not None else None
    intervals = 0
    for granularity in ("hour", "day", "month"):
        lo, hi = widen(conn, granularity, start, end)
        if lo is not None and hi is not None and lo >= hi:
            continue
        n = conn.execute(
            "SELECT carbon.refresh_meter_rollup(%s, coalesce(%s, '-infinity'::timestamptz), "
            "coalesce(%s, 'infinity'::timestamptz), %s)",
            (granularity, lo, hi, ids),
        ).fetchone()[0]
        if granularity == "hour":
            intervals = n
    return intervals


def compute(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime,
            meter_ids: Sequence[int] | None = None) -> int:
    """Recompute the carbon of [start, end) (widened to whole hours) for the given meters
    (None: all): the interval emissions are a view (carbon.meter_emission), so this
    refreshes the rollups. Returns the intervals recomputed."""
    return refresh_rollups(conn, start, end, meter_ids)
