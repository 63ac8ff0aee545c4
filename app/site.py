"""Site configuration as code: a YAML file describing spaces, categories, data sources,
points, meters, equipment, tenants, stores, shopfloors and cost centers.

`import_site` validates the whole file first (shape, references, protocol settings,
formulas) and reports every problem with its path, e.g.
`meters[3].point: unknown point 'AHU-2 kWh'`; only a clean file is written, in one
transaction, as create-or-update by natural key (names; spaces by their path). Importing
the same file again changes nothing, and `export_site` writes the same format back.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.db import INFINITY, NEG_INFINITY, get_engine
from app.models import (
    CarbonRegion,
    TariffAssignment,
    TariffRow,
    CombinedEquipment,
    CombinedEquipmentMember,
    CostCenter,
    DataSource,
    EnergyCategory,
    EnergyItem,
    Equipment,
    ENTITY_LINKS,
    Meter,
    MeterPoint,
    Point,
    Shopfloor,
    Space,
    Store,
    Tenant,
)
from app.protocols import address_errors, connection_errors

PATH_SEP = "/"


# ----------------------------------------------------------------------- schema
class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CategoryIn(_In):
    name: str = Field(min_length=1)
    unit: str = Field(min_length=1)
    kgce_factor: float = Field(0, ge=0)
    description: str | None = None
    items: list[str] = []


class CostCenterIn(_In):
    name: str = Field(min_length=1)
    external_id: str | None = None
    description: str | None = None


class SpaceIn(_In):
    name: str = Field(min_length=1)
    kind: Literal["enterprise", "site", "building", "floor", "room", "custom"] = "custom"
    area_m2: float | None = Field(None, ge=0)
    timezone: str | None = None
    cost_center: str | None = None
    grid_region: str | None = None
    description: str | None = None
    meters: list[str] = []
    children: list["SpaceIn"] = []

    @field_validator("name")
    @classmethod
    def _no_separator(cls, v: str) -> str:
        if PATH_SEP in v:
            raise ValueError(f"a space name cannot contain {PATH_SEP!r} (it separates path levels)")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v


class PointIn(_In):
    name: str = Field(min_length=1)
    object_type: Literal["energy", "analog", "digital"]
    address: dict[str, Any] = {}
    ratio: float = 1.0
    offset: float = 0.0
    low_limit: float | None = None
    high_limit: float | None = None
    unit: str | None = None
    description: str | None = None


class DataSourceIn(_In):
    name: str = Field(min_length=1)
    protocol: Literal["modbus-tcp", "mqtt", "http"]
    connection: dict[str, Any] = {}
    poll_interval_s: float = Field(60, gt=0)
    enabled: bool = True
    description: str | None = None
    points: list[PointIn] = []


class MeterIn(_In):
    name: str = Field(min_length=1)
    kind: Literal["physical", "virtual", "offline"] = "physical"
    category: str
    item: str | None = None
    point: str | None = None
    multiplier: float = 1.0
    point_from: dt.datetime | None = None
    is_counted: bool = True
    hourly_low: float | None = None
    hourly_high: float | None = None
    register_max: float | None = Field(None, gt=0)
    master: str | None = None
    cost_center: str | None = None
    grid_region: str | None = None
    formula: str | None = None
    load_profile: list[float] | None = Field(
        None, min_length=24, max_length=24,
        description="offline meters: 24 hourly weights (local time) to spread daily/monthly values",
    )
    description: str | None = None


class MeterLinkIn(_In):
    meter: str
    direction: Literal["input", "output"] = "input"


class EquipmentIn(_In):
    name: str = Field(min_length=1)
    space: str | None = None
    cost_center: str | None = None
    description: str | None = None
    meters: list[MeterLinkIn | str] = []


class CombinedEquipmentIn(EquipmentIn):
    equipment: list[str] = []


class TenantIn(_In):
    name: str = Field(min_length=1)
    type: str | None = None
    space: str | None = None
    cost_center: str | None = None
    lease_start: dt.date | None = None
    lease_end: dt.date | None = None
    area_m2: float | None = Field(None, ge=0)
    contact: str | None = None
    meters: list[str] = []


class StoreIn(_In):
    name: str = Field(min_length=1)
    space: str | None = None
    cost_center: str | None = None
    area_m2: float | None = Field(None, ge=0)
    meters: list[str] = []


class ShopfloorIn(StoreIn):
    pass


class TariffAssignmentIn(_In):
    """A tariff (by its label, imported with `wattline tariff import`) pricing a cost
    center's or tenant's meters of one category, or one meter, over a validity period."""

    tariff: str
    category: str | None = None
    cost_center: str | None = None
    tenant: str | None = None
    meter: str | None = None
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None


class SiteFile(_In):
    version: Literal[1] = 1
    categories: list[CategoryIn] = []
    cost_centers: list[CostCenterIn] = []
    spaces: list[SpaceIn] = []
    data_sources: list[DataSourceIn] = []
    meters: list[MeterIn] = []
    equipment: list[EquipmentIn] = []
    combined_equipment: list[CombinedEquipmentIn] = []
    tenants: list[TenantIn] = []
    stores: list[StoreIn] = []
    shopfloors: list[ShopfloorIn] = []
    tariff_assignments: list[TariffAssignmentIn] = []


# ----------------------------------------------------------------------- errors
class SiteFileError(Exception):
    """A site file that cannot be imported; `errors` holds one message per problem."""

    def __init__(self, errors: list[str], source: str = "site file"):
        self.errors = errors
        super().__init__(
            f"{source}: {len(errors)} problem(s), nothing was written:\n  " + "\n  ".join(errors)
        )


def _loc(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


# ----------------------------------------------------------------------- report
@dataclass
class ImportReport:
    created: Counter = field(default_factory=Counter)
    updated: Counter = field(default_factory=Counter)
    unchanged: Counter = field(default_factory=Counter)
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return bool(sum(self.created.values()) or sum(self.updated.values()))

    def summary(self) -> str:
        if not self.changed:
            head = "no changes"
        else:
            parts = [f"{k}: {self.created[k]} created" for k in sorted(self.created) if self.created[k]]
            parts += [f"{k}: {self.updated[k]} updated" for k in sorted(self.updated) if self.updated[k]]
            head = "; ".join(parts)
        tail = f" ({sum(self.unchanged.values())} unchanged)"
        return ("dry run, would apply: " if self.dry_run else "") + head + tail


# --------------------------------------------------------------------- parsing
def parse_site_yaml(text: str, source: str = "site file") -> SiteFile:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SiteFileError([f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"], source) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SiteFileError(["the file must hold a mapping (categories:, spaces:, meters: …)"], source)
    try:
        return SiteFile.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = _loc(p for p in err["loc"] if not (isinstance(p, str) and p in {"str", "MeterLinkIn"}))
            msg = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            shown = "" if isinstance(value, (dict, list)) or value is None else f" (got {value!r})"
            errors.append(f"{loc}: {msg}{shown}")
        raise SiteFileError(errors, source) from None


_FIELD_PREFIX = re.compile(r"^[\w\[\]]+(\.[\w\[\]]+)*: ")


def _under(prefix: str, message: str) -> str:
    """`prefix.field: problem` when the message names a field, else `prefix: problem`."""
    return f"{prefix}.{message}" if _FIELD_PREFIX.match(message) else f"{prefix}: {message}"


def _walk_spaces(spaces: list[SpaceIn], prefix: str = "", loc: str = "spaces"):
    for i, s in enumerate(spaces):
        path = f"{prefix}{PATH_SEP}{s.name}" if prefix else s.name
        yield f"{loc}[{i}]", path, prefix or None, s
        yield from _walk_spaces(s.children, path, f"{loc}[{i}].children")


def _point_key(source: str, name: str) -> str:
    return f"{source}{PATH_SEP}{name}"


# ------------------------------------------------------------------ the import
class _Importer:
    """Resolves references against the file and the database, then writes."""

    def __init__(self, session: Session, site: SiteFile):
        self.s = session
        self.site = site
        self.errors: list[str] = []
        self._status: dict[tuple[str, int], str] = {}

    # -- lookups of what exists already
    def _existing(self, model) -> dict[str, Any]:
        return {o.name: o for o in self.s.scalars(select(model))}

    def _space_paths(self) -> dict[str, Space]:
        spaces = list(self.s.scalars(select(Space)))
        by_id = {s.id: s for s in spaces}
        paths: dict[str, Space] = {}
        for s in spaces:
            names, cur, seen = [], s, set()
            while cur is not None and cur.id not in seen:
                seen.add(cur.id)
                names.append(cur.name)
                cur = by_id.get(cur.parent_id) if cur.parent_id else None
            paths[PATH_SEP.join(reversed(names))] = s
        return paths

    # -- validation --------------------------------------------------------------
    def validate(self) -> None:
        site, err = self.site, self.errors.append

        def dupes(items, loc, key=lambda x: x.name):
            seen: dict[str, int] = {}
            for i, it in enumerate(items):
                k = key(it)
                if k in seen:
                    err(f"{loc}[{i}].name: {k!r} is already defined at {loc}[{seen[k]}]")
                else:
                    seen[k] = i

        for loc, items in [("categories", site.categories), ("cost_centers", site.cost_centers),
                           ("data_sources", site.data_sources), ("meters", site.meters),
                           ("equipment", site.equipment), ("combined_equipment", site.combined_equipment),
                           ("tenants", site.tenants), ("stores", site.stores), ("shopfloors", site.shopfloors)]:
            dupes(items, loc)

        self.categories = {c.name: set(c.items) for c in site.categories}
        for cat in self.s.scalars(select(EnergyCategory)):
            self.categories.setdefault(cat.name, set()).update(i.name for i in cat.items)
        for i, c in enumerate(site.categories):
            for j, item in enumerate(c.items):
                if c.items.index(item) != j:
                    err(f"categories[{i}].items[{j}]: item {item!r} listed twice")
        cost_centers = {c.name for c in site.cost_centers} | set(self._existing(CostCenter))

        def check_cc(name, loc):
            if name is not None and name not in cost_centers:
                err(f"{loc}.cost_center: unknown cost center {name!r}")

        # spaces: unique sibling names, known cost centers
        self.space_paths = set(self._space_paths())
        sibling: dict[tuple, str] = {}
        for loc, path, parent, sp in _walk_spaces(site.spaces):
            key = (parent, sp.name)
            if key in sibling:
                err(f"{loc}.name: {sp.name!r} is already defined at {sibling[key]}")
            sibling[key] = loc
            self.space_paths.add(path)
            check_cc(sp.cost_center, loc)

        # data sources and points
        self.points: dict[str, list[str]] = defaultdict(list)  # point name -> qualified keys
        for p in self.s.scalars(select(Point)):
            key = _point_key(p.data_source.name, p.name)
            if key not in self.points[p.name]:
                self.points[p.name].append(key)
        existing_sources = self._existing(DataSource)
        for i, ds in enumerate(site.data_sources):
            for msg in connection_errors(ds.protocol, ds.connection):
                err(_under(f"data_sources[{i}].connection", msg))
            seen: dict[str, int] = {}
            for j, p in enumerate(ds.points):
                if p.name in seen:
                    err(f"data_sources[{i}].points[{j}].name: {p.name!r} is already defined at points[{seen[p.name]}]")
                seen[p.name] = j
                for msg in address_errors(ds.protocol, p.address):
                    err(_under(f"data_sources[{i}].points[{j}].address", msg))
                if p.low_limit is not None and p.high_limit is not None and p.low_limit > p.high_limit:
                    err(f"data_sources[{i}].points[{j}].low_limit: {p.low_limit} is above high_limit {p.high_limit}")
                key = _point_key(ds.name, p.name)
                if key not in self.points[p.name]:
                    self.points[p.name].append(key)
            if ds.name in existing_sources and existing_sources[ds.name].protocol != ds.protocol:
                err(f"data_sources[{i}].protocol: {ds.name!r} exists with protocol "
                    f"{existing_sources[ds.name].protocol!r}; changing it is not supported")

        # meters
        meter_names = {m.name for m in site.meters} | set(self._existing(Meter))
        self.meter_names = meter_names
        self.point_of: dict[str, str] = {}
        for i, m in enumerate(site.meters):
            loc = f"meters[{i}]"
            if m.category not in self.categories:
                err(f"{loc}.category: unknown energy category {m.category!r}")
            elif m.item is not None and m.item not in self.categories[m.category]:
                err(f"{loc}.item: {m.item!r} is not an item of category {m.category!r}")
            if m.kind == "physical":
                if m.formula is not None:
                    err(f"{loc}.formula: only virtual meters have a formula")
                if m.point is not None:
                    resolved = self._resolve_point(m.point, f"{loc}.point")
                    if resolved:
                        self.point_of[m.name] = resolved
            elif m.kind == "virtual":
                if not m.formula:
                    err(f"{loc}.formula: a virtual meter needs a formula")
                if m.point is not None:
                    err(f"{loc}.point: a virtual meter has no point")
            elif m.point is not None:
                err(f"{loc}.point: an offline meter has no point")
            if m.master is not None:
                if m.master == m.name:
                    err(f"{loc}.master: a meter cannot be its own master")
                elif m.master not in meter_names:
                    err(f"{loc}.master: unknown meter {m.master!r}")
            if m.load_profile is not None and (m.kind != "offline" or min(m.load_profile) < 0
                                               or sum(m.load_profile) <= 0):
                err(f"{loc}.load_profile: only offline meters have one, with weights >= 0 and a positive sum")
            if m.hourly_low is not None and m.hourly_high is not None and m.hourly_low > m.hourly_high:
                err(f"{loc}.hourly_low: {m.hourly_low} is above hourly_high {m.hourly_high}")
            check_cc(m.cost_center, loc)
        self._check_master_cycles()
        self._check_formulas()

        # entities: spaces, meters, members
        def check_meters(meters, loc):
            for j, ref in enumerate(meters):
                name = ref.meter if isinstance(ref, MeterLinkIn) else ref
                if name not in meter_names:
                    err(f"{loc}.meters[{j}]: unknown meter {name!r}")

        for loc, _path, _parent, sp in _walk_spaces(site.spaces):
            check_meters(sp.meters, loc)
        equipment_names = {e.name for e in site.equipment} | set(self._existing(Equipment))
        for kind, items in [("equipment", site.equipment), ("combined_equipment", site.combined_equipment),
                            ("tenants", site.tenants), ("stores", site.stores), ("shopfloors", site.shopfloors)]:
            for i, ent in enumerate(items):
                loc = f"{kind}[{i}]"
                if ent.space is not None and ent.space not in self.space_paths:
                    err(f"{loc}.space: unknown space {ent.space!r} (write the path from the root, "
                        f"levels separated by {PATH_SEP!r})")
                check_cc(ent.cost_center, loc)
                check_meters(ent.meters, loc)
                for j, member in enumerate(getattr(ent, "equipment", [])):
                    if member not in equipment_names:
                        err(f"{loc}.equipment[{j}]: unknown equipment {member!r}")
        tenant_names = {t.name for t in site.tenants} | set(self._existing(Tenant))
        labels = set(self.s.scalars(select(TariffRow.label)))
        for i, a in enumerate(site.tariff_assignments):
            loc = f"tariff_assignments[{i}]"
            if a.tariff not in labels:
                err(f"{loc}.tariff: unknown tariff {a.tariff!r} (import it first with `wattline tariff import`)")
            targets = [x for x in (a.cost_center, a.tenant, a.meter) if x is not None]
            if len(targets) != 1:
                err(f"{loc}: name exactly one of cost_center, tenant, meter")
            if a.meter is None and a.category is None:
                err(f"{loc}.category: a cost center's or tenant's tariff names its energy category")
            if a.category is not None and a.category not in self.categories:
                err(f"{loc}.category: unknown energy category {a.category!r}")
            check_cc(a.cost_center, loc)
            if a.tenant is not None and a.tenant not in tenant_names:
                err(f"{loc}.tenant: unknown tenant {a.tenant!r}")
            if a.meter is not None and a.meter not in meter_names:
                err(f"{loc}.meter: unknown meter {a.meter!r}")
            if a.valid_from and a.valid_to and a.valid_from >= a.valid_to:
                err(f"{loc}.valid_to: must be after valid_from")
        for i, t in enumerate(site.tenants):
            if t.lease_start and t.lease_end and t.lease_start > t.lease_end:
                err(f"tenants[{i}].lease_end: {t.lease_end} is before lease_start {t.lease_start}")

    def _resolve_point(self, ref: str, loc: str) -> str | None:
        if PATH_SEP in ref:
            source, _, name = ref.partition(PATH_SEP)
            if ref in self.points.get(name, []):
                return ref
            self.errors.append(f"{loc}: unknown point {ref!r}")
            return None
        keys = self.points.get(ref, [])
        if not keys:
            self.errors.append(f"{loc}: unknown point {ref!r}")
            return None
        if len(keys) > 1:
            self.errors.append(
                f"{loc}: point name {ref!r} is ambiguous, write one of {', '.join(sorted(keys))}"
            )
            return None
        return keys[0]

    def _check_master_cycles(self) -> None:
        master = {m.name: (m.master.name if m.master else None) for m in self.s.scalars(select(Meter))}
        for m in self.site.meters:
            master[m.name] = m.master
        for i, m in enumerate(self.site.meters):
            seen, cur = {m.name}, master.get(m.name)
            while cur is not None:
                if cur in seen:
                    self.errors.append(f"meters[{i}].master: master meters form a cycle through {cur!r}")
                    break
                seen.add(cur)
                cur = master.get(cur)

    def _check_formulas(self) -> None:
        formulas = {m.name: m.formula for m in self.s.scalars(select(Meter)) if m.formula}
        formulas.update({m.name: m.formula for m in self.site.meters if m.kind == "virtual" and m.formula})
        if not formulas:
            return
        from app.formula import validate_formulas

        index = {m.name: i for i, m in enumerate(self.site.meters)}
        for msg in validate_formulas(formulas, self.meter_names):
            # messages start "meters[<name>]…": point at the file's index where we can
            for name, i in index.items():
                msg = msg.replace(f"meters[{name}]", f"meters[{i}]")
            self.errors.append(msg)

    # -- writing -----------------------------------------------------------------
    def _set(self, obj, label: str, created: bool, **values) -> None:
        changed = False
        for attr, value in values.items():
            current = getattr(obj, attr)
            if isinstance(current, Decimal) and value is not None:
                same = float(current) == float(value)
            elif isinstance(value, float) and current is not None and not isinstance(current, bool):
                same = float(current) == value
            else:
                same = current == value
            if not same:
                if isinstance(value, float) and attr in _NUMERIC_ATTRS:
                    value = Decimal(repr(value))
                setattr(obj, attr, value)
                changed = True
        self._mark(label, obj, "created" if created else "updated" if changed else "unchanged")

    _RANK = {"unchanged": 0, "updated": 1, "created": 2}

    def _mark(self, label: str, obj: Any, status: str) -> None:
        """Record what happened to one object; a later, stronger status wins."""
        key = (label, id(obj))
        current = self._status.get(key)
        if current is None or self._RANK[status] > self._RANK[current]:
            self._status[key] = status

    def _report(self) -> ImportReport:
        report = ImportReport()
        for (kind, _), status in self._status.items():
            getattr(report, status)[kind] += 1
        return report

    def _upsert(self, model, label: str, existing: dict, name: str, **values):
        obj = existing.get(name)
        created = obj is None
        if created:
            obj = model(name=name)
            self.s.add(obj)
            existing[name] = obj
        self._set(obj, label, created, **values)
        return obj

    def write(self) -> ImportReport:
        site, s = self.site, self.s
        ccs = self._existing(CostCenter)
        for c in site.cost_centers:
            self._upsert(CostCenter, "cost_centers", ccs, c.name, external_id=c.external_id,
                         description=c.description)
        s.flush()
        cc_id = lambda n: ccs[n].id if n else None  # noqa: E731

        cats = self._existing(EnergyCategory)
        for c in site.categories:
            cat = self._upsert(EnergyCategory, "categories", cats, c.name, unit=c.unit,
                               kgce_factor=c.kgce_factor, description=c.description)
            s.flush()
            have = {i.name for i in cat.items}
            for item in c.items:
                if item not in have:
                    new_item = EnergyItem(category_id=cat.id, name=item)
                    s.add(new_item)
                    self._mark("energy_items", new_item, "created")
        s.flush()
        items = {(i.category.name, i.name): i for i in s.scalars(select(EnergyItem))}

        spaces = self._space_paths()
        for _loc, path, parent, sp in _walk_spaces(site.spaces):
            obj = spaces.get(path)
            created = obj is None
            if created:
                obj = Space(name=sp.name, parent_id=spaces[parent].id if parent else None)
                s.add(obj)
                spaces[path] = obj
            self._set(obj, "spaces", created, kind=sp.kind, area_m2=sp.area_m2, timezone=sp.timezone,
                      cost_center_id=cc_id(sp.cost_center), grid_region_id=self._region_id(sp.grid_region),
                      description=sp.description)
            s.flush()

        sources = self._existing(DataSource)
        points: dict[str, Point] = {
            _point_key(p.data_source.name, p.name): p for p in s.scalars(select(Point))
        }
        for ds in site.data_sources:
            src = self._upsert(DataSource, "data_sources", sources, ds.name, protocol=ds.protocol,
                               connection=ds.connection, poll_interval_s=ds.poll_interval_s,
                               enabled=ds.enabled, description=ds.description)
            s.flush()
            for p in ds.points:
                key = _point_key(ds.name, p.name)
                obj = points.get(key)
                created = obj is None
                if created:
                    obj = Point(data_source_id=src.id, name=p.name)
                    s.add(obj)
                    points[key] = obj
                self._set(obj, "points", created, object_type=p.object_type, address=p.address,
                          ratio=p.ratio, offset=p.offset, low_limit=p.low_limit,
                          high_limit=p.high_limit, unit=p.unit, description=p.description)
        s.flush()

        meters = self._existing(Meter)
        for m in site.meters:
            cat = cats[m.category]
            obj = self._upsert(
                Meter, "meters", meters, m.name, kind=m.kind, category_id=cat.id,
                item_id=items[(m.category, m.item)].id if m.item else None,
                is_counted=m.is_counted, hourly_low=m.hourly_low, hourly_high=m.hourly_high,
                register_max=m.register_max, cost_center_id=cc_id(m.cost_center),
                grid_region_id=self._region_id(m.grid_region),
                formula=m.formula, load_profile=m.load_profile, description=m.description,
            )
        s.flush()
        for m in site.meters:
            obj = meters[m.name]
            master_id = meters[m.master].id if m.master else None
            if obj.master_meter_id != master_id:
                obj.master_meter_id = master_id
                self._mark("meters", obj, "updated")
            self._link_point(obj, m, points)
        s.flush()

        self._write_entities(spaces, meters, cc_id)
        self._write_tariff_assignments(meters, ccs)
        return self._report()

    def _region_id(self, name: str | None) -> int | None:
        """Grid regions are created on first mention (emission factors refer to them by name)."""
        if name is None:
            return None
        region = self.s.scalars(select(CarbonRegion).where(CarbonRegion.name == name)).first()
        if region is None:
            region = CarbonRegion(name=name)
            self.s.add(region)
            self.s.flush()
            self._mark("grid_regions", region, "created")
        return region.id

    def _write_tariff_assignments(self, meters, ccs) -> None:
        """The file's assignments replace those of each (target, category) it names."""
        if not self.site.tariff_assignments:
            return
        s = self.s
        tariffs = {t.label: t.id for t in s.scalars(select(TariffRow))}
        cats = self._existing(EnergyCategory)
        tenants = self._existing(Tenant)

        def key(a):
            return (a.cost_center_id, a.tenant_id, a.meter_id, a.category_id)

        wanted = []
        for a in self.site.tariff_assignments:
            wanted.append(dict(
                tariff_id=tariffs[a.tariff],
                category_id=cats[a.category].id if a.category else meters[a.meter].category_id,
                cost_center_id=ccs[a.cost_center].id if a.cost_center else None,
                tenant_id=tenants[a.tenant].id if a.tenant else None,
                meter_id=meters[a.meter].id if a.meter else None,
                valid_from=a.valid_from or _NEG_INF, valid_to=a.valid_to or _INF,
            ))
        targets = {(w["cost_center_id"], w["tenant_id"], w["meter_id"], w["category_id"]) for w in wanted}
        have = [a for a in s.scalars(select(TariffAssignment)) if key(a) in targets]
        as_tuple = lambda d: tuple(sorted(d.items()))  # noqa: E731
        have_set = {as_tuple({c: getattr(a, c) for c in wanted[0]}) for a in have}
        want_set = {as_tuple(w) for w in wanted}
        if have_set == want_set:
            for a in have:
                self._mark("tariff_assignments", a, "unchanged")
            return
        for a in have:
            s.delete(a)
        s.flush()
        for w in wanted:
            obj = TariffAssignment(**w)
            s.add(obj)
            self._mark("tariff_assignments", obj, "created")
        s.flush()

    def _link_point(self, meter: Meter, m: MeterIn, points: dict[str, Point]) -> None:
        key = self.point_of.get(m.name)
        links = sorted(meter.point_links, key=lambda link: link.valid_from)
        current = links[-1] if links and links[-1].valid_to == _INF else None
        if key is None:
            if current is not None and m.kind != "physical":
                self.s.delete(current)
                self._mark("meters", meter, "updated")
            return
        point = points[key]
        if current and current.point_id == point.id and current.multiplier == m.multiplier:
            return
        if current is not None and m.point_from is not None and m.point_from > current.valid_from:
            current.valid_to = m.point_from
            self.s.add(MeterPoint(meter_id=meter.id, point_id=point.id, valid_from=m.point_from,
                                  multiplier=m.multiplier))
        elif current is not None:
            current.point_id, current.multiplier = point.id, m.multiplier
        else:
            self.s.add(MeterPoint(meter_id=meter.id, point_id=point.id,
                                  valid_from=m.point_from or _NEG_INF, multiplier=m.multiplier))
        self._mark("meters", meter, "updated")

    def _write_entities(self, spaces, meters, cc_id) -> None:
        s, site = self.s, self.site
        # Space links: the file's list replaces the links of each space it describes.
        for _loc, path, _parent, sp in _walk_spaces(site.spaces):
            self._replace_links("space", spaces[path], [(n, None) for n in sp.meters], meters)

        placed = [
            ("equipment", Equipment, site.equipment),
            ("combined_equipment", CombinedEquipment, site.combined_equipment),
            ("tenant", Tenant, site.tenants),
            ("store", Store, site.stores),
            ("shopfloor", Shopfloor, site.shopfloors),
        ]
        equipment = self._existing(Equipment)
        for kind, model, entries in placed:
            existing = equipment if model is Equipment else self._existing(model)
            for e in entries:
                values: dict[str, Any] = {
                    "space_id": spaces[e.space].id if e.space else None,
                    "cost_center_id": cc_id(e.cost_center),
                }
                if kind in ("equipment", "combined_equipment"):
                    values["description"] = e.description
                if kind == "tenant":
                    values.update(tenant_type=e.type, lease_start=e.lease_start, lease_end=e.lease_end,
                                  area_m2=e.area_m2, contact=e.contact)
                if kind in ("store", "shopfloor"):
                    values["area_m2"] = e.area_m2
                obj = self._upsert(model, _PLURAL[kind], existing, e.name, **values)
                s.flush()
                refs = [
                    (r.meter, r.direction) if isinstance(r, MeterLinkIn) else (r, "input") for r in e.meters
                ]
                if kind not in ("equipment", "combined_equipment"):
                    refs = [(n, None) for n, _ in refs]
                self._replace_links(kind, obj, refs, meters)
                if kind == "combined_equipment":
                    want = {equipment[n].id for n in e.equipment}
                    have = set(s.scalars(select(CombinedEquipmentMember.equipment_id).where(
                        CombinedEquipmentMember.combined_equipment_id == obj.id)))
                    if want != have:
                        s.execute(delete(CombinedEquipmentMember).where(
                            CombinedEquipmentMember.combined_equipment_id == obj.id,
                            CombinedEquipmentMember.equipment_id.in_(have - want)))
                        for eid in want - have:
                            s.add(CombinedEquipmentMember(combined_equipment_id=obj.id, equipment_id=eid))
                        self._mark("combined_equipment", obj, "updated")

    def _replace_links(self, kind: str, entity, refs: list[tuple[str, str | None]], meters) -> None:
        _model, link, col = ENTITY_LINKS[kind]
        entity_id = entity.id
        want = {(meters[name].id, direction) for name, direction in refs}
        rows = self.s.execute(select(link).where(getattr(link, col) == entity_id)).scalars().all()
        have = {(r.meter_id, getattr(r, "direction", None)) for r in rows}
        if want == have:
            return
        self.s.execute(delete(link).where(getattr(link, col) == entity_id))
        self.s.flush()
        for meter_id, direction in sorted(want):
            values = {col: entity_id, "meter_id": meter_id}
            if direction is not None:
                values["direction"] = direction
            self.s.add(link(**values))
        self._mark(_PLURAL.get(kind, "spaces"), entity, "updated")


_INF = INFINITY
_NEG_INF = NEG_INFINITY
_NUMERIC_ATTRS = {"kgce_factor", "area_m2", "register_max", "poll_interval_s"}
_PLURAL = {"equipment": "equipment", "combined_equipment": "combined_equipment", "tenant": "tenants",
           "store": "stores", "shopfloor": "shopfloors"}


def import_site(site: SiteFile, *, url: str | None = None, dry_run: bool = False,
                source: str = "site file") -> ImportReport:
    """Validate everything, then write in one transaction (rolled back on any error)."""
    with Session(get_engine(url)) as session, session.begin():
        importer = _Importer(session, site)
        importer.validate()
        if importer.errors:
            raise SiteFileError(importer.errors, source)
        try:
            report = importer.write()
            session.flush()
        except DBAPIError as exc:
            session.rollback()
            detail = getattr(exc.orig, "diag", None)
            msg = detail.message_primary if detail is not None else str(exc.orig)
            raise SiteFileError([f"database refused the change: {msg}"], source) from None
        report.dry_run = dry_run
        if dry_run:
            session.rollback()
        return report


def import_site_file(path: Path, *, url: str | None = None, dry_run: bool = False) -> ImportReport:
    site = parse_site_yaml(Path(path).read_text(encoding="utf-8-sig"), source=str(path))
    return import_site(site, url=url, dry_run=dry_run, source=str(path))


# ----------------------------------------------------------------------- export
def _clean(d: dict, defaults: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, Decimal):
            v = int(v) if v == v.to_integral_value() else float(v)
        if v is None or v == [] or v == {} or (k in defaults and defaults[k] == v):
            continue
        out[k] = v
    return out


def export_site(url: str | None = None) -> dict:
    """The whole configuration as a plain dict in the import format."""
    with Session(get_engine(url)) as s:
        ccs = {c.id: c.name for c in s.scalars(select(CostCenter).order_by(CostCenter.name))}
        regions = {r.id: r.name for r in s.scalars(select(CarbonRegion))}
        meters = list(s.scalars(select(Meter).order_by(Meter.id)))
        meter_name = {m.id: m.name for m in meters}
        space_rows = list(s.scalars(select(Space).order_by(Space.name)))
        links = defaultdict(list)
        for kind, (_model, link, col) in ENTITY_LINKS.items():
            for row in s.scalars(select(link)):
                links[(kind, getattr(row, col))].append(row)

        def meter_refs(kind, entity_id, directions=False):
            rows = sorted(links[(kind, entity_id)], key=lambda r: meter_name[r.meter_id])
            if not directions:
                return [meter_name[r.meter_id] for r in rows]
            return [meter_name[r.meter_id] if r.direction == "input"
                    else {"meter": meter_name[r.meter_id], "direction": r.direction} for r in rows]

        children = defaultdict(list)
        for sp in space_rows:
            children[sp.parent_id].append(sp)
        paths: dict[int, str] = {}

        def space_tree(parent_id, prefix):
            out = []
            for sp in children[parent_id]:
                path = f"{prefix}{PATH_SEP}{sp.name}" if prefix else sp.name
                paths[sp.id] = path
                out.append(_clean({
                    "name": sp.name, "kind": sp.kind, "area_m2": sp.area_m2, "timezone": sp.timezone,
                    "cost_center": ccs.get(sp.cost_center_id), "grid_region": regions.get(sp.grid_region_id),
                    "description": sp.description,
                    "meters": meter_refs("space", sp.id), "children": space_tree(sp.id, path),
                }, {"kind": "custom"}))
            return out

        doc: dict[str, Any] = {"version": 1}
        doc["categories"] = [
            _clean({"name": c.name, "unit": c.unit, "kgce_factor": c.kgce_factor,
                    "description": c.description, "items": [i.name for i in c.items]}, {"kgce_factor": 0})
            for c in s.scalars(select(EnergyCategory).order_by(EnergyCategory.name))
        ]
        doc["cost_centers"] = [
            _clean({"name": c.name, "external_id": c.external_id, "description": c.description}, {})
            for c in s.scalars(select(CostCenter).order_by(CostCenter.name))
        ]
        doc["spaces"] = space_tree(None, "")
        point_names = Counter(p.name for p in s.scalars(select(Point)))
        doc["data_sources"] = []
        for ds in s.scalars(select(DataSource).order_by(DataSource.name)):
            doc["data_sources"].append(_clean({
                "name": ds.name, "protocol": ds.protocol, "connection": ds.connection,
                "poll_interval_s": ds.poll_interval_s, "enabled": ds.enabled, "description": ds.description,
                "points": [_clean({
                    "name": p.name, "object_type": p.object_type, "address": p.address, "ratio": p.ratio,
                    "offset": p.offset, "low_limit": p.low_limit, "high_limit": p.high_limit,
                    "unit": p.unit, "description": p.description,
                }, {"ratio": 1.0, "offset": 0.0}) for p in ds.points],
            }, {"poll_interval_s": 60, "enabled": True}))
        doc["meters"] = []
        for m in meters:
            current = [link for link in m.point_links if link.valid_to == _INF]
            point = multiplier = point_from = None
            if current:
                p = current[0].point
                point = p.name if point_names[p.name] == 1 else _point_key(p.data_source.name, p.name)
                multiplier = current[0].multiplier
                point_from = current[0].valid_from if current[0].valid_from != _NEG_INF else None
            doc["meters"].append(_clean({
                "name": m.name, "kind": m.kind, "category": m.category.name,
                "item": m.item.name if m.item else None, "point": point, "multiplier": multiplier,
                "point_from": point_from, "is_counted": m.is_counted, "hourly_low": m.hourly_low,
                "hourly_high": m.hourly_high, "register_max": m.register_max,
                "master": meter_name.get(m.master_meter_id), "cost_center": ccs.get(m.cost_center_id),
                "grid_region": regions.get(m.grid_region_id),
                "formula": m.formula, "load_profile": m.load_profile, "description": m.description,
            }, {"kind": "physical", "multiplier": 1.0, "is_counted": True}))
        eq_names = {}
        for kind, model, key in [("equipment", Equipment, "equipment"),
                                 ("combined_equipment", CombinedEquipment, "combined_equipment"),
                                 ("tenant", Tenant, "tenants"), ("store", Store, "stores"),
                                 ("shopfloor", Shopfloor, "shopfloors")]:
            doc[key] = []
            for e in s.scalars(select(model).order_by(model.name)):
                if kind == "equipment":
                    eq_names[e.id] = e.name
                d: dict[str, Any] = {"name": e.name}
                if kind == "tenant":
                    d["type"] = e.tenant_type
                d["space"] = paths.get(e.space_id)
                d["cost_center"] = ccs.get(e.cost_center_id)
                if kind in ("equipment", "combined_equipment"):
                    d["description"] = e.description
                if kind == "tenant":
                    d.update(lease_start=e.lease_start, lease_end=e.lease_end, area_m2=e.area_m2,
                             contact=e.contact)
                if kind in ("store", "shopfloor"):
                    d["area_m2"] = e.area_m2
                d["meters"] = meter_refs(kind, e.id, directions=kind in ("equipment", "combined_equipment"))
                if kind == "combined_equipment":
                    d["equipment"] = sorted(x.name for x in e.members)
                doc[key].append(_clean(d, {}))
        labels = {t.id: t.label for t in s.scalars(select(TariffRow))}
        cat_names = {c.id: c.name for c in s.scalars(select(EnergyCategory))}
        tenant_names = {t.id: t.name for t in s.scalars(select(Tenant))}
        doc["tariff_assignments"] = [
            _clean({
                "tariff": labels[a.tariff_id],
                "category": cat_names.get(a.category_id) if a.meter_id is None else None,
                "cost_center": ccs.get(a.cost_center_id), "tenant": tenant_names.get(a.tenant_id),
                "meter": meter_name.get(a.meter_id),
                "valid_from": None if a.valid_from == _NEG_INF else a.valid_from,
                "valid_to": None if a.valid_to == _INF else a.valid_to,
            }, {})
            for a in s.scalars(select(TariffAssignment).order_by(TariffAssignment.id))
        ]
        return {k: v for k, v in doc.items() if v != []}


def export_site_yaml(url: str | None = None) -> str:
    buf = io.StringIO()
    yaml.safe_dump(export_site(url), buf, sort_keys=False, allow_unicode=True, width=100)
    return buf.getvalue()
