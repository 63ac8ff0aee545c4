"""Grafana's query expansion for its PostgreSQL data source, re-implemented so the
dashboard tests can run every panel's SQL exactly as Grafana would send it (Grafana
itself cannot run here).

Grafana expands a panel's rawSql in two places, and this module follows both:
1. the browser (packages/grafana-sql SqlDatasource.applyTemplateVariables with
   TemplateSrv.replace): template variables `$var`, `[[var]]`, `[[var:fmt]]`, `${var}`,
   `${var:fmt}`, the built-ins `$__interval`, `$__interval_ms`, `$__from`, `$__to`;
   without an explicit format a value goes through SqlDatasource.interpolateVariable
   (single value: quotes doubled, not quoted; multi-value / include-All: each value
   quoted, joined by commas); "All" with a custom allValue is inserted raw;
2. the server (pkg/tsdb/grafana-postgresql-datasource: sqleng.Interpolate, then
   macros.go): `$__interval_ms`, `$__interval`, `$__unixEpochFrom()`, `$__unixEpochTo()`,
   then the `$__name(args)` macros — `$__timeFilter` is an inclusive BETWEEN on
   RFC 3339 instants, `$__timeGroup` is time_bucket('<s>.000s', col) with the data
   source's TimescaleDB switch on and floor(extract(epoch …)) otherwise.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

UTC = dt.timezone.utc
ALL = "$__all"

# public/app/features/variables/utils.ts
VARIABLE_RE = re.compile(r"\$(\w+)|\[\[([\s\S]+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")
# macros.go: `\$([_a-zA-Z0-9]+)\(([^\)]*)\)`
MACRO_RE = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")


class MacroError(ValueError):
    """Grafana would answer the query with 'interpolation failed'."""


@dataclass(frozen=True)
class TimeRange:
    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("time range bounds need a time zone")


@dataclass
class Variable:
    """A dashboard variable as TemplateSrv sees it: its current value(s) and options."""

    name: str
    current: str | list[str]
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None
    options: list[str] = field(default_factory=list)   # option values, the All option excluded


# ----------------------------------------------------------------- durations
_DATE_UNIT = re.compile(r"^(\d+)([dwMy])$")
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_interval(text: str, now: dt.datetime | None = None) -> dt.timedelta:
    """gtime.ParseInterval: '5m', '1h30m', '20ms' as Go durations; Nd, Nw, NM, Ny as the
    span back from now (UTC) by calendar arithmetic."""
    m = _DATE_UNIT.match(text)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        now = (now or dt.datetime.now(UTC)).astimezone(UTC)
        if unit == "d":
            return dt.timedelta(days=n)
        if unit == "w":
            return dt.timedelta(days=7 * n)
        months = n if unit == "M" else 12 * n
        y, mo = divmod(now.month - 1 - months, 12)
        back = _add_months_go(now, y, mo + 1)
        return now - back
    if text in ("0",):
        return dt.timedelta(0)
    pos, total = 0, 0.0
    sign = 1
    if text[:1] in "+-":
        sign, pos = (-1 if text[0] == "-" else 1), 1
    if pos >= len(text):
        raise MacroError(f"invalid duration {text!r}")
    while pos < len(text):
        part = _GO_DURATION.match(text, pos)
        if not part:
            raise MacroError(f"invalid duration {text!r}")
        total += float(part.group(1)) * _GO_UNITS[part.group(2)]
        pos = part.end()
    return dt.timedelta(seconds=sign * total)


def _add_months_go(t: dt.datetime, year_delta: int, month: int) -> dt.datetime:
    """Go's AddDate normalisation: day overflow rolls into the next month."""
    year = t.year + year_delta
    first = t.replace(year=year, month=month, day=1)
    return first + dt.timedelta(days=t.day - 1)


def format_interval(d: dt.timedelta) -> str:
    """gtime.FormatInterval: the largest whole unit (y, d, h, m, s, ms), truncated."""
    ms = d // dt.timedelta(milliseconds=1)
    for size, unit in ((365 * 86_400_000, "y"), (86_400_000, "d"), (3_600_000, "h"),
                       (60_000, "m"), (1000, "s"), (1, "ms")):
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


_ROUND_STEPS = (  # rangeutil.roundInterval: (below this many ms, use this many ms)
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
    (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000),
    (45000, 30000), (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000),
    (1050000, 900000), (1500000, 1200000), (2700000, 1800000), (5400000, 3600000),
    (9000000, 7200000), (16200000, 10800000), (32400000, 21600000), (86400000, 43200000),
    (604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000),
)


def round_interval(ms: float) -> int:
    for below, value in _ROUND_STEPS:
        if ms < below:
            return value
    return 31536000000


def calculate_interval(time_range: TimeRange, max_data_points: int = 1000,
                       min_interval: str | None = None) -> dt.timedelta:
    """rangeutil.calculateInterval: the range over the panel's data points, rounded to a
    friendly step, never below the panel's (or data source's) minimum interval."""
    span_ms = (time_range.end - time_range.start) / dt.timedelta(milliseconds=1)
    ms = round_interval(span_ms / max_data_points)
    if min_interval:
        low = parse_interval(min_interval, time_range.end) // dt.timedelta(milliseconds=1)
        ms = max(ms, low)
    return dt.timedelta(milliseconds=ms)


def rfc3339nano(t: dt.datetime) -> str:
    """Go's time.RFC3339Nano in UTC: fractional seconds without trailing zeros."""
    t = t.astimezone(UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += ("." + f"{t.microsecond:06d}").rstrip("0")
    return text + "Z"


def _go_float(seconds: float) -> str:
    """Go's %v for a float64 (shortest representation, no trailing .0)."""
    if seconds == int(seconds):
        return str(int(seconds))
    return repr(seconds)


# ------------------------------------------------------------ template variables
def sql_quote(value: str) -> str:
    """PostgresQueryModel.quoteLiteral."""
    return "'" + str(value).replace("'", "''") + "'"


def interpolate_variable(value: str | list[str] | int | float, variable: Variable | None):
    """SqlDatasource.interpolateVariable, the format used when the reference names none."""
    if isinstance(value, str):
        if variable is not None and (variable.multi or variable.include_all):
            return sql_quote(value)
        return value.replace("'", "''")
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return ",".join(sql_quote(v) for v in value)
    return value


def format_value(value, fmt: str | Callable | None, variable: Variable | None) -> str:
    """formatVariableValue with the formatRegistry entries SQL dashboards use."""
    if value is None:
        return ""
    if callable(fmt):
        return fmt(value, variable)
    fmt = fmt or "glob"
    name = fmt.split(":")[0]
    many = isinstance(value, (list, tuple))
    if name == "raw":
        return ",".join(value) if many else str(value)
    if name == "csv":
        return ",".join(value) if many else str(value)
    if name == "sqlstring":
        return ",".join(sql_quote(v) for v in value) if many else sql_quote(value)
    if name == "singlequote":
        q = lambda v: "'" + str(v).replace("'", "\\'") + "'"  # noqa: E731
        return ",".join(q(v) for v in value) if many else q(value)
    if name == "doublequote":
        q = lambda v: '"' + str(v).replace('"', '\\"') + '"'  # noqa: E731
        return ",".join(q(v) for v in value) if many else q(value)
    if name == "pipe":
        return "|".join(value) if many else str(value)
    if name == "text":
        return " + ".join(value) if many else str(value)
    if name == "glob":
        if many and len(value) > 1:
            return "{" + ",".join(value) + "}"
        return value[0] if many else str(value)
    raise MacroError(f"variable format {fmt!r} is not implemented here")


def replace_variables(sql: str, variables: dict[str, Variable], builtins: dict[str, str] | None = None,
                      fmt: str | Callable | None = interpolate_variable) -> str:
    """TemplateSrv.replace(sql, scopedVars, fmt) for a SQL data source."""
    builtins = builtins or {}

    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        explicit = m.group(3) or m.group(6)
        use = explicit or fmt
        if name in builtins:                        # scoped vars: __interval, __from, …
            return format_value(builtins[name], use, None)
        variable = variables.get(name)
        if variable is None:
            return m.group(0)
        value = variable.current
        if value == ALL or (isinstance(value, list) and value[:1] == [ALL]):
            if variable.all_value:
                if explicit not in ("text", "percentencode"):
                    return replace_variables(variable.all_value, variables, builtins)
                value = variable.all_value
            else:
                value = list(variable.options)
        return format_value(value, use, variable)

    return VARIABLE_RE.sub(one, sql)


# ------------------------------------------------------------------ macros
def global_interpolate(sql: str, time_range: TimeRange, interval: dt.timedelta) -> str:
    """sqleng.Interpolate: the substitutions every SQL data source shares."""
    sql = sql.replace("$__interval_ms", str(interval // dt.timedelta(milliseconds=1)))
    sql = sql.replace("$__interval", format_interval(interval))
    sql = sql.replace("$__unixEpochFrom()", str(int(time_range.start.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(time_range.end.timestamp())))
    return sql


def _evaluate(name: str, args: list[str], time_range: TimeRange, timescaledb: bool) -> str:
    start, end = time_range.start, time_range.end
    if name == "__time":
        _need(args, 1, name)
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        _need(args, 1, name)
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        _need(args, 1, name)
        return f"{args[0]} BETWEEN '{rfc3339nano(start)}' AND '{rfc3339nano(end)}'"
    if name == "__timeFrom":
        return f"'{rfc3339nano(start)}'"
    if name == "__timeTo":
        return f"'{rfc3339nano(end)}'"
    if name in ("__timeGroup", "__unixEpochGroup"):
        if len(args) < 2:
            raise MacroError(f"macro {name} needs time column and interval and optional fill value")
        try:
            interval = parse_interval(args[1].strip("'"), end)
        except MacroError:
            raise MacroError(f"error parsing interval {args[1]}") from None
        seconds = interval.total_seconds()
        if name == "__unixEpochGroup":
            return f"floor(({args[0]})/{_go_float(seconds)})*{_go_float(seconds)}"
        if timescaledb:
            return f"time_bucket('{seconds:.3f}s',{args[0]})"
        return f"floor(extract(epoch from {args[0]})/{_go_float(seconds)})*{_go_float(seconds)}"
    if name == "__timeGroupAlias":
        return _evaluate("__timeGroup", args, time_range, timescaledb) + ' AS "time"'
    if name == "__unixEpochGroupAlias":
        return _evaluate("__unixEpochGroup", args, time_range, timescaledb) + ' AS "time"'
    if name == "__unixEpochFilter":
        _need(args, 1, name)
        return f"{args[0]} >= {int(start.timestamp())} AND {args[0]} <= {int(end.timestamp())}"
    if name == "__unixEpochNanoFilter":
        _need(args, 1, name)
        return f"{args[0]} >= {_nanos(start)} AND {args[0]} <= {_nanos(end)}"
    if name == "__unixEpochNanoFrom":
        return str(_nanos(start))
    if name == "__unixEpochNanoTo":
        return str(_nanos(end))
    raise MacroError(f'unknown macro "{name}"')


def _need(args: list[str], n: int, name: str) -> None:
    # Go's strings.Split("", ",") gives [""]: an empty argument list still has one item.
    if len(args) < n:
        raise MacroError(f"missing time column argument for macro {name}")


def _nanos(t: dt.datetime) -> int:
    delta = t.astimezone(UTC) - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def interpolate_macros(sql: str, time_range: TimeRange, timescaledb: bool = True) -> str:
    """postgresMacroEngine.Interpolate: every `$__name(args)`. A `$__timeGroup(…)` directly
    followed by ',' (its first occurrence in the query) gets the 'AS "time"' alias, as
    before Grafana 5.3."""
    original = sql
    errors: list[str] = []

    def one(m: re.Match) -> str:
        name = m.group(1)
        if name == "__timeGroup":
            i = original.find(m.group(0))
            if i >= 0 and original[i + len(m.group(0)):i + len(m.group(0)) + 1] == ",":
                name = "__timeGroupAlias"
        args = [a.strip(" ") for a in m.group(2).split(",")]
        try:
            return _evaluate(name, args, time_range, timescaledb)
        except MacroError as exc:
            errors.append(str(exc))
            return "macro_error()"

    out = MACRO_RE.sub(one, sql)
    if errors:
        raise MacroError(errors[0])
    return out


def builtin_variables(time_range: TimeRange, interval: dt.timedelta) -> dict[str, str]:
    """The scoped variables the browser adds to every query request."""
    return {
        "__interval": format_interval(interval),
        "__interval_ms": str(interval // dt.timedelta(milliseconds=1)),
        "__from": str(int(time_range.start.timestamp() * 1000)),
        "__to": str(int(time_range.end.timestamp() * 1000)),
    }


def expand(sql: str, time_range: TimeRange, interval: dt.timedelta,
           variables: dict[str, Variable] | None = None, timescaledb: bool = True) -> str:
    """The SQL Grafana runs for a panel target: browser substitutions, then the server's."""
    sql = replace_variables(sql, variables or {}, builtin_variables(time_range, interval))
    sql = global_interpolate(sql, time_range, interval)
    return interpolate_macros(sql, time_range, timescaledb)


def metric_find_values(rows: Sequence[Sequence], columns: Sequence[str]) -> list[tuple[str, str]]:
    """ResponseParser.transformMetricFindResponse: (text, value) pairs from a variable
    query's rows — the __text/__value columns when present, else every column's values as
    both — deduplicated by text (lodash uniqBy), as strings."""
    cols = list(columns)
    out: list[tuple[str, str]] = []
    if "__text" in cols and "__value" in cols:
        ti, vi = cols.index("__text"), cols.index("__value")
        pairs = [(_text(r[ti]), _text(r[vi])) for r in rows]
    else:
        pairs = [(_text(v), _text(v)) for r in rows for v in r]
    seen = set()
    for text, value in pairs:
        if text not in seen:
            seen.add(text)
            out.append((text, value))
    return out


def _text(v) -> str:
    return "" if v is None else str(v)
