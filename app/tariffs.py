"""Tariffs: the OpenEI Utility Rate Database (URDB v7/v8) shape, Wattline's extensions,
validation that names the field, and import into config.tariff.

A URDB tariff JSON (one object, or an API response {"items": [...]}) imports as is; what
URDB lacks (time zone, currency, holidays, power factor, taxes, validity, demand
interval, billing cycle day) lives under the "wattline" key. Every problem in a file is
reported at once, each prefixed with its field path, so a user fixes a tariff in one go.
Pricing semantics are in docs/billing.md and app/billing.py.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
# The tariff tables are mapped with the rest of the configuration in app/models.py.
from app.models import ReactiveMeter, TariffAssignment, TariffRow  # noqa: F401

ENERGY_UNITS = ("kWh", "kWh daily", "kWh/kW", "kWh/kW daily")
CHARGE_UNITS = ("$/month", "$/day")
LINE_KINDS = ("energy", "demand", "fixed", "minimum", "power_factor")


class TariffError(ValueError):
    """A tariff that cannot be stored; .problems lists every problem, field first."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid tariff:\n  " + "\n  ".join(problems))


# ----------------------------------------------------------------------------- model
class _Open(BaseModel):
    # URDB records carry many descriptive fields we keep but do not interpret.
    model_config = ConfigDict(extra="allow")


class EnergyTier(_Open):
    rate: float = 0.0
    adj: float = 0.0
    max: float | None = None
    unit: str = "kWh"
    sell: float | None = None

    @property
    def price(self) -> float:
        return self.rate + self.adj


class DemandTier(_Open):
    rate: float = 0.0
    adj: float = 0.0
    max: float | None = None

    @property
    def price(self) -> float:
        return self.rate + self.adj


class PowerFactorRule(BaseModel):
    """Below `threshold` (monthly average PF), either `rate` per kvarh above the allowance
    (method 'kvarh') or billed demand × threshold / PF (method 'demand_multiplier')."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(gt=0, le=1)
    method: Literal["kvarh", "demand_multiplier"]
    rate: float | None = Field(default=None, ge=0)


class Tax(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    percent: float
    applies_to: list[Literal["energy", "demand", "fixed", "minimum", "power_factor"]] = Field(
        default_factory=lambda: list(LINE_KINDS)
    )


class Extensions(BaseModel):
    """What URDB lacks; the "wattline" object of a tariff."""

    model_config = ConfigDict(extra="forbid")
    timezone: str = "UTC"
    currency: str = "USD"
    holidays: list[dt.date] = Field(default_factory=list)
    power_factor: PowerFactorRule | None = None
    taxes: list[Tax] = Field(default_factory=list)
    valid_from: dt.datetime | dt.date | None = None
    valid_to: dt.datetime | dt.date | None = None
    demand_interval_minutes: Literal[15, 30] | None = None
    billing_cycle_day: int = Field(default=1, ge=1, le=28)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if len(value) != 3 or not value.isalpha() or not value.isupper():
            raise ValueError(f"{value!r} is not an ISO 4217 code such as USD or SEK")
        return value


Schedule = list[list[int]]


class Tariff(_Open):
    label: str | None = None
    name: str = Field(min_length=1)
    utility: str | None = None
    startdate: int | None = None   # URDB: effective date, seconds since 1970 UTC
    enddate: int | None = None
    energyratestructure: list[list[EnergyTier]] | None = None
    energyweekdayschedule: Schedule | None = None
    energyweekendschedule: Schedule | None = None
    demandratestructure: list[list[DemandTier]] | None = None
    demandweekdayschedule: Schedule | None = None
    demandweekendschedule: Schedule | None = None
    flatdemandstructure: list[list[DemandTier]] | None = None
    flatdemandmonths: list[int] | None = None
    demandunits: str | None = None
    flatdemandunit: str | None = None
    demandwindow: float | None = None   # URDB: demand averaging window, minutes
    fixedchargefirstmeter: float | None = None
    fixedchargeunits: str | None = None
    mincharge: float | None = None
    minchargeunits: str | None = None
    wattline: Extensions = Field(default_factory=Extensions)

    # -- derived, as the engine reads them
    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.wattline.timezone)

    @property
    def demand_minutes(self) -> int:
        if self.wattline.demand_interval_minutes:
            return self.wattline.demand_interval_minutes
        return int(self.demandwindow) if self.demandwindow in (15, 30) else 15

    @property
    def stored_label(self) -> str:
        return self.label or self.name

    def validity(self) -> tuple[dt.datetime, dt.datetime]:
        from app.db import INFINITY, NEG_INFINITY

        def instant(v: dt.datetime | dt.date | int | None, default: dt.datetime) -> dt.datetime:
            if v is None:
                return default
            if isinstance(v, int):
                return dt.datetime.fromtimestamp(v, dt.timezone.utc)
            if isinstance(v, dt.datetime):
                return v if v.tzinfo else v.replace(tzinfo=self.zone)
            return dt.datetime.combine(v, dt.time(), self.zone)

        ext = self.wattline
        lo = instant(ext.valid_from if ext.valid_from is not None else self.startdate, NEG_INFINITY)
        hi = instant(ext.valid_to if ext.valid_to is not None else self.enddate, INFINITY)
        return lo, hi


# ------------------------------------------------------------------------ validation
def _schedule_problems(name: str, schedule: Schedule | None) -> list[str]:
    if schedule is None:
        return []
    out = []
    if len(schedule) != 12:
        out.append(f"{name}: {len(schedule)} months, expected 12")
    for m, row in enumerate(schedule):
        if len(row) != 24:
            out.append(f"{name}[{m}]: {len(row)} hours, expected 24")
        for h, p in enumerate(row):
            if p < 0:
                out.append(f"{name}[{m}][{h}]: period {p} is negative")
    return out


def _periods_used(schedule: Schedule | None) -> set[int]:
    return {p for row in (schedule or []) for p in row if p >= 0}


def _tier_problems(name: str, structure: list[list[Any]] | None, energy: bool) -> list[str]:
    out = []
    for p, tiers in enumerate(structure or []):
        if not tiers:
            out.append(f"{name}[{p}]: no tiers")
            continue
        last = None
        for t, tier in enumerate(tiers):
            if tier.max is not None:
                if tier.max <= 0:
                    out.append(f"{name}[{p}][{t}].max: {tier.max} must be positive")
                if last is not None and tier.max <= last:
                    out.append(f"{name}[{p}][{t}].max: tiers not ascending ({tier.max} after {last})")
                last = tier.max
            elif t < len(tiers) - 1:
                out.append(f"{name}[{p}][{t}].max: missing on a tier that is not the last")
            if energy and tier.unit not in ENERGY_UNITS:
                out.append(f"{name}[{p}][{t}].unit: {tier.unit!r} is not one of {', '.join(ENERGY_UNITS)}")
        if energy and len({tier.unit for tier in tiers}) > 1:
            out.append(f"{name}[{p}]: tiers mix units {sorted({t.unit for t in tiers})}")
    return out


def _coverage_problems(structure_name: str, structure: list | None, users: dict[str, set[int]]) -> list[str]:
    out = []
    n = len(structure or [])
    for user, used in users.items():
        for p in sorted(used):
            if p >= n:
                out.append(f"{structure_name}[{p}]: period {p} is used by {user} but has no rate")
    return out


def validate(data: Any) -> Tariff:
    """The tariff, or TariffError listing every problem with its field path."""
    if not isinstance(data, dict):
        raise TariffError([f"tariff: expected a JSON object, got {type(data).__name__}"])
    try:
        tariff = Tariff.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ""
            for part in err["loc"]:
                loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
            problems.append(f"{loc or 'tariff'}: {err['msg']}")
        raise TariffError(problems) from None

    t = tariff
    problems: list[str] = []
    for name in ("energyweekdayschedule", "energyweekendschedule", "demandweekdayschedule",
                 "demandweekendschedule"):
        problems += _schedule_problems(name, getattr(t, name))
    problems += _tier_problems("energyratestructure", t.energyratestructure, energy=True)
    problems += _tier_problems("demandratestructure", t.demandratestructure, energy=False)
    problems += _tier_problems("flatdemandstructure", t.flatdemandstructure, energy=False)

    if t.energyratestructure is not None:
        for name in ("energyweekdayschedule", "energyweekendschedule"):
            if getattr(t, name) is None:
                problems.append(f"{name}: required with energyratestructure")
        problems += _coverage_problems("energyratestructure", t.energyratestructure, {
            "energyweekdayschedule": _periods_used(t.energyweekdayschedule),
            "energyweekendschedule": _periods_used(t.energyweekendschedule)})
    elif t.energyweekdayschedule or t.energyweekendschedule:
        problems.append("energyratestructure: required with an energy schedule")

    if t.demandratestructure is not None:
        for name in ("demandweekdayschedule", "demandweekendschedule"):
            if getattr(t, name) is None:
                problems.append(f"{name}: required with demandratestructure")
        problems += _coverage_problems("demandratestructure", t.demandratestructure, {
            "demandweekdayschedule": _periods_used(t.demandweekdayschedule),
            "demandweekendschedule": _periods_used(t.demandweekendschedule)})
    elif t.demandweekdayschedule or t.demandweekendschedule:
        problems.append("demandratestructure: required with a demand schedule")

    if t.flatdemandstructure is not None:
        if t.flatdemandmonths is None:
            problems.append("flatdemandmonths: required with flatdemandstructure")
        else:
            if len(t.flatdemandmonths) != 12:
                problems.append(f"flatdemandmonths: {len(t.flatdemandmonths)} months, expected 12")
            problems += _coverage_problems("flatdemandstructure", t.flatdemandstructure,
                                           {"flatdemandmonths": set(t.flatdemandmonths)})
    elif t.flatdemandmonths is not None:
        problems.append("flatdemandstructure: required with flatdemandmonths")

    for field in ("demandunits", "flatdemandunit"):
        unit = getattr(t, field)
        if unit not in (None, "kW"):
            problems.append(f"{field}: {unit!r} is not supported (kW only)")
    if t.demandwindow is not None and t.demandwindow not in (15, 30) and not t.wattline.demand_interval_minutes:
        problems.append(f"demandwindow: {t.demandwindow:g} minutes; Wattline bills 15 or 30")
    if t.fixedchargefirstmeter is not None and (t.fixedchargeunits or "$/month") not in CHARGE_UNITS:
        problems.append(f"fixedchargeunits: {t.fixedchargeunits!r} is not one of {', '.join(CHARGE_UNITS)}")
    if t.mincharge is not None and (t.minchargeunits or "$/month") not in CHARGE_UNITS:
        problems.append(f"minchargeunits: {t.minchargeunits!r} is not one of {', '.join(CHARGE_UNITS)}")
    pf = t.wattline.power_factor
    if pf is not None and pf.method == "kvarh" and pf.rate is None:
        problems.append("wattline.power_factor.rate: required for method 'kvarh' (price per kvarh)")
    if pf is not None and pf.method == "demand_multiplier" and not (t.demandratestructure or t.flatdemandstructure):
        problems.append("wattline.power_factor.method: 'demand_multiplier' needs a demand charge")
    lo, hi = t.validity()
    if lo >= hi:
        problems.append(f"wattline.valid_to: {hi.isoformat()} is not after valid_from {lo.isoformat()}")
    if not (t.energyratestructure or t.demandratestructure or t.flatdemandstructure
            or t.fixedchargefirstmeter is not None):
        problems.append("tariff: no charges (energyratestructure, demand or fixed charges)")
    if problems:
        raise TariffError(problems)
    return t


def tariffs_in(data: Any) -> list[Any]:
    """The tariff objects of a file: one object, a list, or a URDB response {"items": [...]}."""
    if isinstance(data, dict) and "items" in data and "name" not in data:
        items = data["items"]
        if not isinstance(items, list) or not items:
            raise TariffError(["items: expected a non-empty list of tariffs"])
        return items
    if isinstance(data, list):
        return data
    return [data]


def validate_all(data: Any) -> list[Tariff]:
    items = tariffs_in(data)
    out, problems = [], []
    for i, item in enumerate(items):
        try:
            out.append(validate(item))
        except TariffError as exc:
            prefix = f"items[{i}]." if len(items) > 1 else ""
            problems += [prefix + p for p in exc.problems]
    if problems:
        raise TariffError(problems)
    return out


# -------------------------------------------------------------------------- storage
def _driver(conn_or_session: Any):
    """The psycopg connection behind a psycopg connection, SQLAlchemy Connection or Session
    (same transaction)."""
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    if isinstance(conn_or_session, Session):
        conn_or_session = conn_or_session.connection()
    if isinstance(conn_or_session, Connection):
        return conn_or_session.connection.driver_connection
    return conn_or_session


def _store(conn, tariff: Tariff, source: Any) -> int:
    lo, hi = tariff.validity()
    definition = tariff.model_dump(mode="json", exclude_none=True)
    row = conn.execute(
        "SELECT id, definition, valid_from, valid_to FROM config.tariff WHERE label = %s FOR UPDATE",
        (tariff.stored_label,),
    ).fetchone()
    params = (tariff.name, tariff.utility, tariff.wattline.timezone, tariff.wattline.currency,
              lo, hi, json.dumps(definition), json.dumps(source))
    if row is None:
        return conn.execute(
            "INSERT INTO config.tariff (name, utility, timezone, currency, valid_from, valid_to, "
            "definition, source, label) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (*params, tariff.stored_label),
        ).fetchone()[0]
    if row[1] == definition and (row[2], row[3]) == (lo, hi):
        return row[0]
    conn.execute(
        "UPDATE config.tariff SET name = %s, utility = %s, timezone = %s, currency = %s, "
        "valid_from = %s, valid_to = %s, definition = %s, source = %s, version = version + 1, "
        "updated_at = now() WHERE id = %s",
        (*params, row[0]),
    )
    return row[0]


def import_tariff(conn_or_session: Any, data: Any) -> int | list[int]:
    """Validate and store (create or update by label) a tariff; returns its id, or the
    ids of a list / {"items": [...]} of several. Raises TariffError with every problem
    and stores nothing if any tariff is invalid. Runs in the caller's transaction.
    An updated definition logs the meters it prices as dirty (sql/billing.sql trigger)."""
    items = tariffs_in(data)
    tariffs = validate_all(data)
    conn = _driver(conn_or_session)
    ids = [_store(conn, t, src) for t, src in zip(tariffs, items)]
    return ids[0] if len(ids) == 1 else ids


def load_tariffs(conn, ids: list[int] | None = None) -> dict[int, Tariff]:
    """Stored tariffs by id, as models (definitions were validated when stored)."""
    rows = conn.execute(
        "SELECT id, definition FROM config.tariff WHERE %s::int[] IS NULL OR id = ANY (%s)",
        (ids, ids),
    ).fetchall()
    return {r[0]: Tariff.model_validate(r[1]) for r in rows}


def list_tariffs(conn) -> list[tuple]:
    return conn.execute(
        "SELECT id, label, name, timezone, currency, valid_from, valid_to, version "
        "FROM config.tariff ORDER BY id"
    ).fetchall()
