"""Excel export of any report (openpyxl, write-only mode).

Sheets: Summary (key figures, the breakdown table, a native line chart of the series and
a pie chart of the breakdown), Detail (every bucket with completeness, the comparison
and breakdown columns, and a totals row), Parameters (entity, period, time zone, units,
completeness, source). Write-only mode streams rows to a temporary file, so a long
series never sits in memory twice; the caller streams the file out (`stream_file`).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.chart import LineChart, PieChart, Reference
from openpyxl.chart.label import DataLabelList
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font

MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CHUNK = 64 * 1024


def _local(value: Any, zone: ZoneInfo) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(zone).replace(tzinfo=None)
    return value


def _bold(ws, value: Any) -> WriteOnlyCell:
    cell = WriteOnlyCell(ws, value=value)
    cell.font = Font(bold=True)
    return cell


def write(report: dict[str, Any], path: str) -> None:
    """Write the report's workbook to `path`."""
    zone = ZoneInfo(report["timezone"])
    unit = report["unit"]
    series = report["series"]
    groups = [g["key"] for g in (report["breakdown"] or {}).get("groups", [])]
    comparison = report["comparison"]
    entity = report["entity"]
    wb = Workbook(write_only=True)

    # Summary -------------------------------------------------------------------------
    ws = wb.create_sheet("Summary")
    ws.column_dimensions["A"].width = 30
    ws.column_dimensions["B"].width = 22
    ws.append([_bold(ws, f"{report['title']} report: {entity['name']}")])
    totals = report["totals"]
    rows: list[list[Any]] = [
        ["Entity", f"{entity['kind']} {entity['id']}: {entity['name']}"],
        ["Period", f"{_local(report['period']['from'], zone):%Y-%m-%d %H:%M} – "
                   f"{_local(report['period']['to'], zone):%Y-%m-%d %H:%M} ({report['timezone']})"],
        ["Granularity", report["granularity"]],
        [f"Total ({unit})", totals["value"]],
        ["Completeness", totals["completeness"]],
    ]
    if report["intensity"]:
        rows.append([f"Intensity ({report['intensity']['unit']})", report["intensity"]["value"]])
    if report["load"]:
        rows.append([f"Peak load (kW, {report['load']['resolution']})", report["load"]["peak_kw"]])
        rows.append([f"Base load (kW, {report['load']['resolution']})", report["load"]["base_kw"]])
    if comparison:
        rows.append([f"Comparison total ({comparison['kind']})", comparison["total"]])
        rows.append(["Change (%)", comparison["change_pct"]])
    for r in rows:
        ws.append(r)
    ws.append([])
    if groups:
        ws.append([_bold(ws, report["breakdown"]["by"]), _bold(ws, unit), _bold(ws, "share")])
        first = len(rows) + 4
        for g in report["breakdown"]["groups"]:
            ws.append([g["key"], g["value"], g["share"]])
        last = first + len(groups) - 1
        pie = PieChart()
        pie.title = f"{report['title']} by {report['breakdown']['by']}"
        pie.add_data(Reference(ws, min_col=2, min_row=first - 1, max_row=last), titles_from_data=True)
        pie.set_categories(Reference(ws, min_col=1, min_row=first, max_row=last))
        pie.dataLabels = DataLabelList()
        pie.dataLabels.showPercent = True
    n = len(series)
    line = LineChart()
    line.title = f"{report['title']} per {report['granularity']}"
    line.y_axis.title = unit
    line.x_axis.title = report["timezone"]
    line.height, line.width = 9, 24
    ncols = 2 if comparison else 1
    line.add_data(_detail_ref(wb, 2, 1, n + 1, ncols), titles_from_data=True)
    line.set_categories(_detail_ref(wb, 1, 2, n + 1, 1))
    ws.add_chart(line, "D2")
    if groups:
        ws.add_chart(pie, "D22")

    # Detail --------------------------------------------------------------------------
    wd = wb.create_sheet("Detail")
    header = ["Bucket (local)", f"{report['title']} ({unit})"]
    if comparison:
        header.append(f"Comparison ({comparison['kind']})")
    header += ["Expected intervals", "Present intervals"] + groups
    wd.append([_bold(wd, h) for h in header])
    cseries = comparison["series"] if comparison else []
    for i, pt in enumerate(series):
        row = [_local(pt["bucket"], zone), pt["value"]]
        if comparison:
            row.append(cseries[i]["value"] if i < len(cseries) else None)
        row += [pt["expected"], pt["present"]]
        if groups:
            gv = pt.get("groups") or {}
            row += [gv.get(g) for g in groups]
        wd.append(row)
    total_row = [_bold(wd, "Total"), totals["value"]]
    if comparison:
        total_row.append(comparison["total"])
    total_row += [totals["expected"], totals["present"]]
    if groups:
        gt = {g["key"]: g["value"] for g in report["breakdown"]["groups"]}
        total_row += [gt.get(g) for g in groups]
    wd.append(total_row)

    # Parameters ----------------------------------------------------------------------
    wp = wb.create_sheet("Parameters")
    wp.column_dimensions["A"].width = 24
    wp.column_dimensions["B"].width = 60
    period = report["period"]
    for k, v in [
        ("Metric", f"{report['metric']} ({report['title']})"),
        ("Entity kind", entity["kind"]), ("Entity id", entity["id"]), ("Entity", entity["name"]),
        ("Floor area (m²)", entity.get("area_m2")),
        ("Granularity", report["granularity"]),
        ("From (local)", _local(period["from"], zone)), ("To (local, exclusive)", _local(period["to"], zone)),
        ("Time zone", report["timezone"]), ("Unit", unit),
        ("Breakdown", (report["breakdown"] or {}).get("by")),
        ("Comparison", comparison["kind"] if comparison else None),
        ("Meters", report["meters"]), ("Source", report["source"]),
        ("Expected intervals", totals["expected"]), ("Present intervals", totals["present"]),
        ("Completeness", totals["completeness"]),
        ("Completeness definition", report["completeness"]["definition"]),
        ("Load definition", report["load"]["definition"] if report["load"] else None),
        ("Generated (UTC)", dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)),
    ]:
        wp.append([_bold(wp, k), v])
    wb.save(path)


def _detail_ref(wb: Workbook, min_col: int, min_row: int, max_row: int, ncols: int) -> Reference:
    """A reference into the Detail sheet, which write-only mode creates after the charts."""
    return Reference(range_string=f"'Detail'!${_col(min_col)}${min_row}:${_col(min_col + ncols - 1)}${max_row}")


def _col(i: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(i)


def render_to_file(report: dict[str, Any]) -> str:
    """The workbook in a temporary file (the caller streams and removes it)."""
    fd, path = tempfile.mkstemp(prefix="wattline-report-", suffix=".xlsx")
    os.close(fd)
    try:
        write(report, path)
    except BaseException:
        os.unlink(path)
        raise
    return path


def stream_file(path: str) -> Iterator[bytes]:
    """Yield the file in chunks, then remove it."""
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk
    finally:
        os.unlink(path)
