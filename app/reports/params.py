"""Typed, validated report parameters.

Everything a report needs is stated once here and checked once: the entity (kind and
id), the metric, the granularity, the period in the reporting time zone, the breakdown,
the comparison, the unit and the output format. A bad value raises ParamError naming the
query parameter, which the API turns into a 422 problem document.

Periods: `from` and `to` are local dates (`2025-03-01`) or local date-times
(`2025-03-01T06:00`) in the reporting zone; an explicit offset (`…+01:00`, `Z`) is honoured.
`from` is inclusive. `to` is exclusive for a date-time, and for a date it means "through
the end of that day" (so `from=2025-03-01&to=2025-03-31` is all of March). The engine
then widens the period outward to whole buckets of the granularity.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

ENTITY_KINDS = ("space", "equipment", "combined_equipment", "tenant", "store", "shopfloor",
                "meter", "cost_center")
# Kinds with a floor area, for per-m² intensity.
AREA_KINDS = ("space", "tenant", "store", "shopfloor")
GRANULARITIES = ("15min", "hour", "day", "week", "month", "year")
BREAKDOWNS = ("category", "item", "child", "tou_period")
COMPARISONS = ("previous", "last_year")
UNITS = ("native", "kgce")
FORMATS = ("json", "xlsx", "html", "png", "pdf")
# Upper bound on buckets in one series, so one request cannot ask for a million rows.
MAX_BUCKETS = 40_000


class ParamError(ValueError):
    """A report parameter is invalid; `field` names the query parameter."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ReportParams:
    metric: str
    entity: str
    entity_id: int
    granularity: str
    start: dt.datetime            # aware; inclusive
    end: dt.datetime              # aware; exclusive
    zone: str
    by: str | None = None
    compare: str | None = None
    unit: str = "native"
    category: str | None = None   # energy category id or name (None: the entity's only one)
    format: str = "json"

    @property
    def period_text(self) -> str:
        z = ZoneInfo(self.zone)
        return f"{self.start.astimezone(z).isoformat()} – {self.end.astimezone(z).isoformat()}"


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_instant(field: str, text: str, zone: ZoneInfo, *, end: bool = False) -> dt.datetime:
    """A local date or date-time (reporting zone) as an aware instant; see the module docs."""
    text = (text or "").strip()
    if not text:
        raise ParamError(field, "required: a date (2025-03-01) or date-time (2025-03-01T06:00)")
    try:
        if _DATE.match(text):
            day = dt.date.fromisoformat(text)
            if end:
                day += dt.timedelta(days=1)
            return dt.datetime.combine(day, dt.time(), tzinfo=zone)
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except (ValueError, OverflowError):
        raise ParamError(field, f"{text!r} is not a date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM)") from None
    if value.tzinfo is None:
        # Local wall time; fold=0 picks the first of a repeated hour (autumn change).
        value = value.replace(tzinfo=zone)
    return value


def _choice(field: str, value: str | None, allowed: tuple[str, ...], default: str | None = None) -> str | None:
    if value is None or value == "":
        return default
    v = value.strip().lower().replace("-", "_") if field != "granularity" else value.strip().lower()
    if v not in allowed:
        raise ParamError(field, f"{value!r} is not one of: {', '.join(allowed)}")
    return v


def parse(*, metric: str, entity: str, entity_id: int | None, granularity: str | None,
          start: str | None, end: str | None, zone: str, by: str | None = None,
          compare: str | None = None, unit: str | None = None, category: str | None = None,
          format: str | None = None, known_metrics: tuple[str, ...] | None = None) -> ReportParams:
    """Validate raw query values into ReportParams (ParamError on the first bad one)."""
    if known_metrics is not None and metric not in known_metrics:
        raise ParamError("metric", f"{metric!r} is not one of: {', '.join(known_metrics)}")
    kind = _choice("entity", entity, ENTITY_KINDS)
    if kind is None:
        raise ParamError("entity", f"required: one of {', '.join(ENTITY_KINDS)}")
    if entity_id is None:
        raise ParamError("id", "required: the entity's id")
    if entity_id < 1:
        raise ParamError("id", "must be a positive integer")
    gran = _choice("granularity", granularity, GRANULARITIES, "day")
    z = ZoneInfo(zone)
    s = parse_instant("from", start or "", z)
    e = parse_instant("to", end or "", z, end=True)
    if s >= e:
        raise ParamError("to", f"must be after from ({s.isoformat()})")
    if e - s > dt.timedelta(days=366 * 10 + 3):
        raise ParamError("to", "the period is limited to 10 years")
    quarters = (e - s).total_seconds() / 900
    per_bucket = {"15min": 1, "hour": 4}.get(gran, 96)
    if quarters / per_bucket > MAX_BUCKETS:
        raise ParamError("granularity", f"{gran} over this period gives more than {MAX_BUCKETS} buckets: "
                                        "choose a coarser granularity or a shorter period")
    return ReportParams(
        metric=metric, entity=kind, entity_id=entity_id, granularity=gran, start=s, end=e, zone=zone,
        by=_choice("by", by, BREAKDOWNS), compare=_choice("compare", compare, COMPARISONS),
        unit=_choice("unit", unit, UNITS, "native"), category=(category or None),
        format=_choice("format", format, FORMATS, "json"),
    )


def shifted(params: ReportParams, start: dt.datetime, end: dt.datetime) -> ReportParams:
    return replace(params, start=start, end=end, compare=None)


def comparison_period(kind: str, start: dt.datetime, end: dt.datetime, zone: str) -> tuple[dt.datetime, dt.datetime]:
    """The base period: `last_year` moves both ends back one calendar year (local wall
    time); `previous` is the period of the same length just before — whole local months
    when the period is whole months, else the same number of local days (or the same
    duration when the period is not whole days)."""
    z = ZoneInfo(zone)
    ls, le = start.astimezone(z).replace(tzinfo=None), end.astimezone(z).replace(tzinfo=None)

    def aware(t: dt.datetime) -> dt.datetime:
        return t.replace(tzinfo=z)

    if kind == "last_year":
        def back(t: dt.datetime) -> dt.datetime:
            try:
                return t.replace(year=t.year - 1)
            except ValueError:  # 29 February
                return t.replace(year=t.year - 1, day=28)
        return aware(back(ls)), aware(back(le))
    midnight = dt.time()
    if ls.time() == midnight and le.time() == midnight and ls.day == 1 and le.day == 1:
        months = (le.year - ls.year) * 12 + le.month - ls.month
        y, m = divmod(ls.year * 12 + ls.month - 1 - months, 12)
        return aware(dt.datetime(y, m + 1, 1)), aware(ls)
    if ls.time() == midnight and le.time() == midnight:
        return aware(ls - (le - ls)), aware(ls)
    return start - (end - start), start
