"""Readings that arrive from outside: pushed over HTTP, published over MQTT, imported
from files.

Senders spell timestamps, numbers and point names in many ways. One module decides
what each may look like and how a point is found by name, so the three doors accept the
same things and reject them with the same words: every rejection names the row, the
field, the value and the reason.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import psycopg

from app.readings import PointScaling, Reading

UTC = dt.timezone.utc
# Epoch numbers: seconds below this magnitude (year 5138), milliseconds up to 1e14.
EPOCH_MS_FROM = 1e11
EPOCH_MS_UNTIL = 1e14
# A reading stamped further ahead than this is a device clock error, not a reading.
MAX_FUTURE = dt.timedelta(days=1)
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=UTC)


class InputError(ValueError):
    """One field of one reading is unusable; `reason` says why in plain words."""

    def __init__(self, field: str, value: Any, reason: str):
        super().__init__(f"{field} {value!r}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


@dataclass(frozen=True)
class RowError:
    """A rejected field, located for people: `where` is e.g. {'row': 3} or
    {'sheet': 'Sheet1', 'row': 5, 'column': 'C'}."""

    where: dict[str, Any]
    field: str
    value: Any
    reason: str

    def as_dict(self) -> dict[str, Any]:
        value = self.value if isinstance(self.value, (str, int, float, bool, type(None))) else str(self.value)
        return {**self.where, "field": self.field, "value": value, "reason": self.reason}

    def __str__(self) -> str:
        place = " ".join(f"{k} {v}" for k, v in self.where.items())
        return f"{place}, {self.field} = {self.value!r}: {self.reason}"


def clean_name(text: str) -> str:
    """A name as users mean it: BOM characters (MyEMS templates carry them) and
    surrounding whitespace removed."""
    return text.replace("\ufeff", "").replace("\u200b", "").strip()


# ---------------------------------------------------------------------- timestamps
def localize(naive: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """A wall-clock time in `zone` as an aware UTC instant. A time inside a DST gap is
    rejected; a repeated (autumn) time is its first occurrence."""
    if zone is UTC:
        return naive.replace(tzinfo=UTC)
    aware = naive.replace(tzinfo=zone, fold=0)
    back = aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if back != naive:
        raise InputError("ts", naive.isoformat(sep=" "), f"does not exist in {zone} (daylight-saving gap)")
    return aware.astimezone(UTC)


def _from_epoch(number: float, raw: Any) -> dt.datetime:
    if not math.isfinite(number):
        raise InputError("ts", raw, "not a finite number")
    magnitude = abs(number)
    if magnitude >= EPOCH_MS_UNTIL:
        raise InputError("ts", raw, "epoch number too large for seconds or milliseconds")
    seconds = number / 1000.0 if magnitude >= EPOCH_MS_FROM else number
    return EARLIEST + dt.timedelta(seconds=seconds)


def parse_timestamp(
    raw: Any, *, naive_tz: dt.tzinfo = UTC, now: dt.datetime | None = None
) -> dt.datetime:
    """An aware UTC instant from ISO 8601 text (with an offset, or naive = `naive_tz`),
    a datetime, or epoch seconds / milliseconds (decided by magnitude)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise InputError("ts", raw, "missing timestamp")
    if isinstance(raw, bool):
        raise InputError("ts", raw, "a boolean is not a timestamp")
    if isinstance(raw, dt.datetime):
        ts = raw.astimezone(UTC) if raw.tzinfo else localize(raw, naive_tz)
    elif isinstance(raw, dt.date):
        ts = localize(dt.datetime.combine(raw, dt.time()), naive_tz)
    elif isinstance(raw, (int, float)):
        ts = _from_epoch(float(raw), raw)
    elif isinstance(raw, str):
        text = clean_name(raw)
        try:
            ts = _from_epoch(float(text), raw)
        except ValueError:
            try:
                parsed = dt.datetime.fromisoformat(text)
            except ValueError:
                raise InputError("ts", raw, "not an ISO 8601 timestamp or epoch number") from None
            ts = parsed.astimezone(UTC) if parsed.tzinfo else localize(parsed, naive_tz)
    else:
        raise InputError("ts", raw, f"a {type(raw).__name__} is not a timestamp")
    if ts < EARLIEST:
        raise InputError("ts", raw, "before 1970")
    if ts > (now or dt.datetime.now(UTC)) + MAX_FUTURE:
        raise InputError("ts", raw, "more than a day in the future")
    return ts


# -------------------------------------------------------------------------- values
def parse_value(raw: Any, field: str = "value") -> float:
    """A finite float from a number or numeric text; booleans, blanks, NaN and
    infinities are refused."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise InputError(field, raw, "missing value")
    if isinstance(raw, bool):
        raise InputError(field, raw, "a boolean is not a number")
    if isinstance(raw, (int, float)):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(clean_name(raw))
        except ValueError:
            raise InputError(field, raw, "not a number") from None
    else:
        raise InputError(field, raw, f"a {type(raw).__name__} is not a number")
    if not math.isfinite(value):
        raise InputError(field, raw, "not a finite number")
    return value


# -------------------------------------------------------------------------- points
@dataclass(frozen=True)
class PointRef:
    id: int
    name: str
    data_source: str
    protocol: str
    key: str | None
    scaling: PointScaling


@dataclass
class PointDirectory:
    """Finds points by id, key or name (and meters by name, when loaded with them).
    A name that several data sources use is ambiguous and refused with their names."""

    points: dict[int, PointRef]
    by_name: dict[str, list[PointRef]] = field(default_factory=dict)
    meters: dict[str, int | None] = field(default_factory=dict)  # meter name -> current point id

    def __post_init__(self) -> None:
        if not self.by_name:
            for p in self.points.values():
                for label in {p.name, p.key} - {None}:
                    self.by_name.setdefault(label, []).append(p)

    @classmethod
    def load(
        cls,
        conn: psycopg.Connection,
        *,
        protocol: str | None = None,
        data_source_id: int | None = None,
        with_meters: bool = False,
    ) -> "PointDirectory":
        rows = conn.execute(
            """
            SELECT p.id, p.name, ds.name, ds.protocol, p.address->>'key',
                   p.ratio, p."offset", p.low_limit, p.high_limit
            FROM config.point p JOIN config.data_source ds ON ds.id = p.data_source_id
            WHERE (%(protocol)s::text IS NULL OR ds.protocol = %(protocol)s)
              AND (%(ds)s::int IS NULL OR ds.id = %(ds)s)
            ORDER BY p.id
            """,
            {"protocol": protocol, "ds": data_source_id},
        ).fetchall()
        points = {
            r[0]: PointRef(r[0], r[1], r[2], r[3], r[4], PointScaling(r[0], r[5], r[6], r[7], r[8]))
            for r in rows
        }
        meters: dict[str, int | None] = {}
        if with_meters:
            for name, point_id in conn.execute(
                """
                SELECT m.name, mp.point_id FROM config.meter m
                LEFT JOIN config.meter_point mp
                       ON mp.meter_id = m.id AND now() >= mp.valid_from AND now() < mp.valid_to
                """
            ):
                meters[name] = point_id
        return cls(points=points, meters=meters)

    def point(self, ref: Any, field: str = "point") -> PointRef:
        """A point by key or name, or by id (an integer, or digits no name matches)."""
        if isinstance(ref, bool) or ref is None or (isinstance(ref, str) and not clean_name(ref)):
            raise InputError(field, ref, "missing point reference")
        if isinstance(ref, float) and ref.is_integer():
            ref = int(ref)
        if isinstance(ref, int):
            if ref in self.points:
                return self.points[ref]
            raise InputError(field, ref, "no such point id")
        if not isinstance(ref, str):
            raise InputError(field, ref, "a point is named by its key, name or id")
        name = clean_name(ref)
        found = self.by_name.get(name, [])
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            sources = ", ".join(sorted(f"{p.data_source!r} (id {p.id})" for p in found))
            raise InputError(field, ref, f"ambiguous: points of that name in data sources {sources}; use the id")
        if name.isdigit() and int(name) in self.points:
            return self.points[int(name)]
        raise InputError(field, ref, "unknown point")

    def meter_point(self, ref: Any, field: str = "meter") -> PointRef:
        """The point currently feeding the named meter."""
        name = clean_name(ref) if isinstance(ref, str) else ref
        if name not in self.meters:
            raise InputError(field, ref, "unknown meter")
        point_id = self.meters[name]
        if point_id is None or point_id not in self.points:
            raise InputError(field, ref, "meter has no current point")
        return self.points[point_id]

    def point_or_meter(self, ref: Any, field: str = "point") -> PointRef:
        """A point name/id or a meter name; both matching different points is ambiguous."""
        try:
            point = self.point(ref, field)
        except InputError as exc:
            if isinstance(ref, str) and clean_name(ref) in self.meters:
                return self.meter_point(ref, field)
            raise exc
        if isinstance(ref, str) and clean_name(ref) in self.meters:
            other = self.meters[clean_name(ref)]
            if other is not None and other != point.id:
                raise InputError(field, ref, f"ambiguous: a point (id {point.id}) and a meter "
                                 f"(point id {other}) have this name")
        return point


# ------------------------------------------------------------------------ batches
@dataclass(frozen=True)
class RawReading:
    """One reading as the sender wrote it, with where it came from."""

    where: dict[str, Any]
    point: Any
    ts: Any
    value: Any


def prepare_readings(
    rows: Iterable[RawReading],
    resolve,
    *,
    naive_tz: dt.tzinfo = UTC,
    apply_scaling: bool = True,
    columns: dict[str, str] | None = None,
    now: dt.datetime | None = None,
) -> tuple[list[Reading], list[RowError]]:
    """Validate every row (none is written here): readings ready for write_readings,
    and every problem found. `resolve(ref, field)` maps a point reference to a PointRef.
    With `apply_scaling`, values are device values (ratio/offset applied); without, they
    are engineering values and only the limit flags are computed."""
    readings: list[Reading] = []
    errors: list[RowError] = []
    columns = columns or {}
    now = now or dt.datetime.now(UTC)
    for row in rows:
        row_errors: list[InputError] = []
        point = ts = value = None
        try:
            point = resolve(row.point, "point")
        except InputError as exc:
            row_errors.append(exc)
        try:
            ts = parse_timestamp(row.ts, naive_tz=naive_tz, now=now)
        except InputError as exc:
            row_errors.append(exc)
        try:
            value = parse_value(row.value)
        except InputError as exc:
            row_errors.append(exc)
        for exc in row_errors:
            where = dict(row.where)
            if exc.field in columns:
                where["column"] = columns[exc.field]
            errors.append(RowError(where, exc.field, exc.value, exc.reason))
        if row_errors:
            continue
        scaling = point.scaling
        if not apply_scaling:
            scaling = PointScaling(point.id, 1.0, 0.0, scaling.low_limit, scaling.high_limit)
        scaled, quality = scaling.apply(value)
        if not math.isfinite(scaled):
            where = {**row.where, **({"column": columns["value"]} if "value" in columns else {})}
            errors.append(RowError(where, "value", row.value, "not finite after the point's ratio and offset"))
            continue
        readings.append((point.id, ts, scaled, quality))
    return readings, errors


def errors_text(errors: Sequence[RowError], limit: int = 50) -> str:
    lines = [str(e) for e in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"… and {len(errors) - limit} more")
    return "\n".join(lines)
