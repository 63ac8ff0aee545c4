"""File imports: long-format readings, MyEMS offline-meter sheets, MyEMS data repairs.

People migrating from MyEMS bring its own templates (Chinese headers, names with BOM
characters, notes under the data), so each parser is built around those files as they
really are, and tolerant of the usual header spellings. Every importer reads and
validates the whole file first; one bad cell rejects the file with a message naming
sheet, row, column and value, and nothing is written. A valid file is written in one
transaction. Local times in files are in the reporting time zone
(WATTLINE_REPORTING_TIMEZONE) unless they carry an offset.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from openpyxl import load_workbook
from openpyxl.utils import get_column_letter

from app.ingest import (
    InputError,
    PointDirectory,
    RawReading,
    RowError,
    clean_name,
    localize,
    parse_timestamp,
    parse_value,
    prepare_readings,
)
from app.readings import PointScaling, mark_dirty, write_readings

UTC = dt.timezone.utc
MAX_ERRORS_SHOWN = 50


class FileImportError(Exception):
    """The file was refused; nothing was written. `errors` lists every problem found."""

    def __init__(self, path: Path, errors: list[RowError | str]):
        self.path = Path(path)
        self.errors = errors
        lines = [str(e) for e in errors[:MAX_ERRORS_SHOWN]]
        if len(errors) > MAX_ERRORS_SHOWN:
            lines.append(f"… and {len(errors) - MAX_ERRORS_SHOWN} more")
        n = len(errors)
        super().__init__(f"{self.path.name}: {n} problem{'s' * (n != 1)}, nothing imported:\n  " + "\n  ".join(lines))


@dataclass
class ImportReport:
    kind: str
    file: str
    rows: int = 0            # data rows read
    written: int = 0         # rows inserted
    duplicates: int = 0      # readings already stored (readings import)
    replaced: int = 0        # rows deleted because the file supersedes them
    targets: list[str] = field(default_factory=list)  # meters or points touched
    dirty_ranges: int = 0

    def summary(self) -> str:
        parts = [f"{self.kind} import of {self.file}: {self.rows} rows read, {self.written} written"]
        if self.duplicates:
            parts.append(f"{self.duplicates} already present")
        if self.replaced:
            parts.append(f"{self.replaced} replaced")
        if self.targets:
            parts.append(f"for {', '.join(self.targets)}")
        if self.dirty_ranges:
            parts.append(f"{self.dirty_ranges} range(s) marked for recomputation")
        return "; ".join(parts)


# ----------------------------------------------------------------------- reading
@dataclass
class Sheet:
    name: str | None                      # None for CSV
    rows: list[tuple[int, list[Any]]]     # (row number as the user sees it, cells)

    def where(self, row: int) -> dict[str, Any]:
        return {"sheet": self.name, "row": row} if self.name is not None else {"line": row}

    def column(self, index: int, header: str | None = None) -> str:
        if self.name is None:
            return f'{index + 1} ("{header}")' if header else str(index + 1)
        return get_column_letter(index + 1)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not clean_name(value))


def read_sheets(path: Path) -> list[Sheet]:
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        try:
            wb = load_workbook(path, read_only=True, data_only=True)
        except Exception as exc:
            raise FileImportError(path, [f"cannot read as an Excel workbook: {exc}"]) from None
        try:
            return [
                Sheet(ws.title, [(i, list(r)) for i, r in enumerate(ws.iter_rows(values_only=True), start=1)])
                for ws in wb.worksheets
            ]
        finally:
            wb.close()
    if suffix in (".csv", ".txt"):
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise FileImportError(path, [f"not UTF-8 text (byte {exc.start}); save the CSV as UTF-8"]) from None
        try:
            dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.reader(text.splitlines(), dialect)
        return [Sheet(None, [(reader.line_num, row) for row in reader])]
    raise FileImportError(path, [f"unsupported file type {path.suffix!r}: use .xlsx or .csv"])


def _key(header: Any) -> str:
    """A header as compared: BOM, case, spaces, underscores and dashes ignored."""
    return re.sub(r"[\s_\-./()]+", "", clean_name(str(header))).lower() if not _blank(header) else ""


def _find_columns(header: list[Any], wanted: dict[str, tuple[str, ...]]) -> dict[str, int]:
    keys = [_key(h) for h in header]
    found = {}
    for field_, aliases in wanted.items():
        for alias in aliases:  # aliases in order of preference
            if alias in keys:
                found[field_] = keys.index(alias)
                break
    return found


def _first_row(sheet: Sheet) -> tuple[int, list[Any]] | None:
    return next(((n, r) for n, r in sheet.rows if any(not _blank(c) for c in r)), None)


def _zone(tz: str | None) -> ZoneInfo:
    if tz is None:
        from app.settings import get_settings

        tz = get_settings().reporting_timezone
    return ZoneInfo(tz)


def _connect(url: str | None) -> psycopg.Connection:
    if url is None:
        from app.db import database_url

        url = database_url()
    return psycopg.connect(url)


# ---------------------------------------------------------------------- readings
POINT_ALIASES = ("point", "pointid", "pointname", "pointkey", "数据点", "数据点id", "点位", "点位id", "点位名称")
METER_ALIASES = ("meter", "metername", "meterid", "计量表", "计量表名称", "表计")
ANY_ALIASES = ("pointormeter", "pointmeter", "name", "名称")
READING_COLUMNS = {
    "point": POINT_ALIASES + METER_ALIASES + ANY_ALIASES,
    "ts": ("ts", "timestamp", "time", "datetime", "datetimelocal", "localtime", "date", "时间", "日期时间", "日期"),
    "value": ("value", "reading", "actualvalue", "cumulativevalue", "值", "数值", "实际值", "读数"),
}


def import_readings(path: Path | str, *, url: str | None = None, tz: str | None = None,
                    apply_scaling: bool = False) -> ImportReport:
    """Long-format readings (point or meter, timestamp, value) from CSV or XLSX.
    Values are engineering values unless `apply_scaling` (then device values: the point's
    ratio and offset are applied). Readings already stored are kept, counted as duplicates."""
    path = Path(path)
    zone = _zone(tz)
    sheets = read_sheets(path)
    errors: list[RowError | str] = []
    readings = []
    rows_read = 0
    with _connect(url) as conn:
        directory = PointDirectory.load(conn, with_meters=True)
        found_any = False
        for sheet in sheets:
            head = _first_row(sheet)
            if head is None:
                continue
            header_row, header = head
            cols = _find_columns(header, READING_COLUMNS)
            if len(cols) < 3:
                if sheet.name is not None and found_any:
                    continue  # extra sheets (notes) after a data sheet
                missing = [f for f in READING_COLUMNS if f not in cols]
                where = f"sheet {sheet.name} " if sheet.name else ""
                errors.append(f"{where}row {header_row}: no column for {', '.join(missing)} in header "
                              f"{[h for h in header if not _blank(h)]!r} (expected point or meter, ts, value)")
                continue
            found_any = True
            point_header = _key(header[cols["point"]])
            # A "meter" column holds meter names only; any other holds point names or
            # ids, or meter names (a name both use for different points is refused).
            resolve = directory.meter_point if point_header in METER_ALIASES else directory.point_or_meter
            columns = {f: sheet.column(i, str(header[i])) for f, i in cols.items()}
            raw = []
            for n, r in sheet.rows:
                if n <= header_row or all(_blank(c) for c in r):
                    continue
                cell = lambda f: r[cols[f]] if cols[f] < len(r) else None  # noqa: E731
                raw.append(RawReading(sheet.where(n), cell("point"), cell("ts"), cell("value")))
            rows_read += len(raw)
            good, bad = prepare_readings(
                raw, lambda ref, f: resolve(ref, "point"), naive_tz=zone,
                apply_scaling=apply_scaling, columns=columns,
            )
            readings += good
            errors += bad
            if sheet.name is not None:
                break  # one data sheet per workbook
        if not errors and not readings:
            errors.append("no readings in the file")
        if errors:
            raise FileImportError(path, errors)
        with conn.transaction():
            result = write_readings(conn, readings)
    return ImportReport("readings", path.name, rows=rows_read, written=result.accepted,
                        duplicates=result.duplicates, dirty_ranges=result.late_ranges,
                        targets=sorted({directory.points[p].name for p, *_ in readings}))


# ----------------------------------------------------------------------- offline
@dataclass
class _OfflineRow:
    meter_id: int
    meter: str
    days: dict[int, float]


def _integer(value: Any, field_: str, low: int, high: int) -> int:
    try:
        number = parse_value(value, field_)
    except InputError:
        raise InputError(field_, value, f"expected a whole number {low}-{high}") from None
    if not number.is_integer() or not low <= number <= high:
        raise InputError(field_, value, f"expected a whole number {low}-{high}")
    return int(number)


def parse_offline(path: Path, sheets: list[Sheet], meters: dict[str, tuple[int, str]],
                  meter_ids: dict[int, tuple[str, str]]) -> tuple[int, int, list[_OfflineRow], list]:
    """MyEMS's offline-meter template: A1/B1 year/month headers, A2 year, B2 month, day
    numbers in row 2 from column D; then one row per meter (A id, B name, C note, D..
    values), ending at the first blank row (the template's notes follow it)."""
    sheet = sheets[0]
    errors: list[RowError | str] = []
    rows = dict(sheet.rows)

    def err(row: int, col: int, field_: str, value: Any, reason: str) -> None:
        errors.append(RowError({**sheet.where(row), "column": sheet.column(col)}, field_, value, reason))

    def cell(row: int, col: int) -> Any:
        r = rows.get(row, [])
        return r[col] if col < len(r) else None

    year = month = None
    try:
        year = _integer(cell(2, 0), "year", 1970, 2200)
    except InputError as exc:
        err(2, 0, "year", exc.value, exc.reason)
    try:
        month = _integer(cell(2, 1), "month", 1, 12)
    except InputError as exc:
        err(2, 1, "month", exc.value, exc.reason)
    # Day columns: the numbers in row 2 from column D (the template's), else D=1, E=2, ...
    width = max((len(r) for r in rows.values()), default=0)
    day_of: dict[int, int] = {}
    for col in range(3, width):
        label = cell(2, col)
        if _blank(label):
            continue
        try:
            day = _integer(label, "day number", 1, 31)
        except InputError as exc:
            err(2, col, "day number", exc.value, exc.reason)
            continue
        if day in day_of.values():
            err(2, col, "day number", label, "day appears twice")
        day_of[col] = day
    if not day_of:
        day_of = {3 + d - 1: d for d in range(1, 32)}
    days_in_month = calendar.monthrange(year, month)[1] if year and month else 31

    out: list[_OfflineRow] = []
    seen: dict[int, int] = {}
    for n in sorted(r for r in rows if r >= 3):
        r = rows[n]
        if all(_blank(c) for c in r):
            break  # the template's notes follow a blank row
        raw_id, raw_name = cell(n, 0), cell(n, 1)
        name = clean_name(str(raw_name)) if not _blank(raw_name) else ""
        if name:
            if name not in meters:
                err(n, 1, "meter", raw_name, "unknown meter")
                continue
            meter_id, kind = meters[name]
        else:
            try:
                meter_id = _integer(raw_id, "meter id", 1, 2**31 - 1)
            except InputError as exc:
                err(n, 0, "meter id", exc.value, "no meter name in column B and " + exc.reason)
                continue
            if meter_id not in meter_ids:
                err(n, 0, "meter id", raw_id, "unknown meter id")
                continue
            name, kind = meter_ids[meter_id]
        if kind != "offline":
            err(n, 1 if not _blank(raw_name) else 0, "meter", raw_name if not _blank(raw_name) else raw_id,
                f"meter {name!r} is a {kind} meter, not an offline meter")
            continue
        if meter_id in seen:
            err(n, 1, "meter", raw_name, f"meter already listed in row {seen[meter_id]}")
            continue
        seen[meter_id] = n
        values: dict[int, float] = {}
        for col, day in day_of.items():
            raw = cell(n, col)
            if _blank(raw):
                continue  # not (yet) read: the template allows partial months
            field_ = f"day {day}"
            try:
                value = parse_value(raw, field_)
            except InputError as exc:
                err(n, col, field_, raw, exc.reason)
                continue
            if value < 0:
                err(n, col, field_, raw, "negative energy")
            elif day > days_in_month:
                err(n, col, field_, raw, f"{calendar.month_name[month]} {year} has {days_in_month} days")
            else:
                values[day] = value
        out.append(_OfflineRow(meter_id, name, values))
    if not out and not errors:
        errors.append(f"sheet {sheet.name}: no meter rows from row 3 on")
    return year or 0, month or 0, out, errors


def import_offline(path: Path | str, *, url: str | None = None, tz: str | None = None) -> ImportReport:
    """Daily values of offline meters (MyEMS template). A newer import replaces the same
    days of the same meters (and a month value of that month); blank cells leave what
    is stored. The meter's local days are marked dirty for the processing jobs."""
    path = Path(path)
    zone = _zone(tz)
    sheets = read_sheets(path)
    if sheets[0].name is None:
        raise FileImportError(path, ["the offline template is an .xlsx workbook"])
    report = ImportReport("offline", path.name)
    with _connect(url) as conn:
        meters = {name: (mid, kind) for mid, name, kind in conn.execute("SELECT id, name, kind FROM config.meter")}
        meter_ids = {mid: (name, kind) for name, (mid, kind) in meters.items()}
        year, month, rows, errors = parse_offline(path, sheets, meters, meter_ids)
        if errors:
            raise FileImportError(path, errors)
        report.rows = len(rows)
        with conn.transaction():
            for row in rows:
                if not row.days:
                    continue
                days = [dt.date(year, month, d) for d in sorted(row.days)]
                cur = conn.execute(
                    "DELETE FROM energy.offline_value WHERE meter_id = %s AND ("
                    "(period = 'day' AND period_start = ANY(%s)) OR (period = 'month' AND period_start = %s))",
                    (row.meter_id, days, dt.date(year, month, 1)),
                )
                report.replaced += cur.rowcount
                with conn.cursor() as c:
                    c.executemany(
                        "INSERT INTO energy.offline_value (meter_id, period_start, period, value, source) "
                        "VALUES (%s, %s, 'day', %s, %s)",
                        [(row.meter_id, d, row.days[d.day], path.name) for d in days],
                    )
                report.written += len(days)
                start = localize(dt.datetime.combine(days[0], dt.time()), zone)
                end = localize(dt.datetime.combine(days[-1] + dt.timedelta(days=1), dt.time()), zone)
                mark_dirty(conn, start, end, "offline import", meter_id=row.meter_id)
                report.dirty_ranges += 1
                report.targets.append(row.meter)
    return report


# ------------------------------------------------------------------------ repair
REPAIR_COLUMNS = {
    "id": ("pointid", "id", "点位id", "数据点id"),
    "name": ("pointname", "name", "点位名称", "数据点名称", "名称"),
    "ts": ("datetimelocal", "datetime", "localdatetime", "timestamp", "ts", "time", "日期时间", "时间"),
    "value": ("actualvalue", "value", "cumulativevalue", "实际值", "值", "数值"),
}


def _repair_point(directory: PointDirectory, raw_id: Any, raw_name: Any):
    name = clean_name(str(raw_name)) if not _blank(raw_name) else ""
    by_id = None
    if not _blank(raw_id):
        try:
            by_id = directory.points.get(_integer(raw_id, "point id", 1, 2**31 - 1))
        except InputError:
            raise InputError("point id", raw_id, "expected a whole number") from None
    if by_id is not None and (not name or by_id.name == name):
        return by_id
    if name:
        try:
            return directory.point(name, "point name")
        except InputError as exc:
            if exc.reason == "unknown point" and by_id is not None:
                raise InputError("point name", raw_name, f"no point has this name, and point id {by_id.id} "
                                 f"is {by_id.name!r}") from None
            raise
    raise InputError("point id", raw_id, "unknown point id" if not _blank(raw_id) else "missing point id and name")


def import_repair(path: Path | str, *, url: str | None = None, tz: str | None = None) -> ImportReport:
    """Corrected register values (MyEMS data-repair template: point id, point name, local
    date time, cumulative value after the ratio). For each point the stored readings
    between its first and last repaired instant are replaced by the file's, and that
    range is marked dirty so energy is recomputed. A point is found by name (MyEMS
    ids differ from Wattline's), or by id when the name is blank or agrees."""
    path = Path(path)
    zone = _zone(tz)
    sheets = read_sheets(path)
    errors: list[RowError | str] = []
    by_point: dict[int, dict[dt.datetime, tuple[float, int, dict]]] = {}
    report = ImportReport("repair", path.name)
    with _connect(url) as conn:
        directory = PointDirectory.load(conn)
        sheet = cols = None
        for candidate in sheets:
            head = _first_row(candidate)
            if head is None:
                continue
            found = _find_columns(head[1], REPAIR_COLUMNS)
            if "ts" in found and "value" in found and ("id" in found or "name" in found):
                sheet, cols, header_row = candidate, found, head[0]
                break
        if sheet is None:
            raise FileImportError(path, ["no sheet has the data-repair header "
                                         "(POINT ID / POINT NAME, DATE TIME LOCAL, ACTUAL VALUE)"])
        now = dt.datetime.now(UTC)
        for n, r in sheet.rows:
            if n <= header_row or all(_blank(c) for c in r):
                continue
            cell = lambda f: r[cols[f]] if f in cols and cols[f] < len(r) else None  # noqa: E731
            where = sheet.where(n)
            report.rows += 1
            problems = []
            point = ts = value = None
            try:
                point = _repair_point(directory, cell("id"), cell("name"))
            except InputError as exc:
                problems.append((("id" if exc.field == "point id" else "name"), exc))
            try:
                ts = parse_timestamp(cell("ts"), naive_tz=zone, now=now)
            except InputError as exc:
                problems.append(("ts", exc))
            try:
                value = parse_value(cell("value"))
            except InputError as exc:
                problems.append(("value", exc))
            if not problems and ts in by_point.get(point.id, {}):
                problems.append(("ts", InputError("ts", cell("ts"),
                                 f"point {point.name!r} already has a value for this time in row "
                                 f"{by_point[point.id][ts][2]['row']}")))
            for col_field, exc in problems:
                col = cols.get(col_field, cols.get("name", 0))
                errors.append(RowError({**where, "column": sheet.column(col)}, exc.field, exc.value, exc.reason))
            if problems:
                continue
            scaling = PointScaling(point.id, 1.0, 0.0, point.scaling.low_limit, point.scaling.high_limit)
            stored, quality = scaling.apply(value)
            by_point.setdefault(point.id, {})[ts] = (stored, quality, where)
        if not errors and not by_point:
            errors.append(f"sheet {sheet.name}: no data rows under the header")
        if errors:
            raise FileImportError(path, errors)
        with conn.transaction():
            for point_id, values in by_point.items():
                first, last = min(values), max(values)
                cur = conn.execute(
                    "DELETE FROM raw.point_value WHERE point_id = %s AND ts BETWEEN %s AND %s",
                    (point_id, first, last),
                )
                report.replaced += cur.rowcount
                result = write_readings(conn, [(point_id, ts, v, q) for ts, (v, q, _) in sorted(values.items())])
                report.written += result.accepted
                mark_dirty(conn, first, last + dt.timedelta(microseconds=1), "data repair", point_id=point_id)
                report.dirty_ranges += 1
                report.targets.append(directory.points[point_id].name)
    return report
