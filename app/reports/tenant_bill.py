"""A tenant's bill for one month: the tenant's current bills (billing.bill, entity kind
'tenant', one per energy category) whose billing period falls mostly in that month of the
reporting zone, with their lines (billing.bill_line), as JSON, Excel or PDF."""

from __future__ import annotations

import datetime as dt
import io
import re
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from app.reports.engine import Unavailable, check_scope, entity_info
from app.reports.params import ParamError

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def month_bounds(text: str, zone: str) -> tuple[dt.datetime, dt.datetime]:
    m = _MONTH.match((text or "").strip())
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise ParamError("month", f"{text!r} is not a month (YYYY-MM)")
    y, mo = int(m.group(1)), int(m.group(2))
    z = ZoneInfo(zone)
    start = dt.datetime(y, mo, 1, tzinfo=z)
    end = dt.datetime(y + (mo == 12), mo % 12 + 1, 1, tzinfo=z)
    return start, end


def build(conn: psycopg.Connection, tenant_id: int, month: str, scope: Any = None) -> dict[str, Any]:
    check_scope(conn, scope, "tenant", tenant_id)
    tenant = entity_info(conn, "tenant", tenant_id)
    if conn.execute("SELECT to_regclass('billing.bill')").fetchone()[0] is None:
        raise Unavailable("billing is not installed in this database")
    zone = conn.execute("SELECT energy.reporting_zone()").fetchone()[0]
    start, end = month_bounds(month, zone)
    bills = conn.execute(
        "SELECT b.id, c.name, c.unit, b.currency, b.period_start, b.period_end, b.status, b.revision, "
        "       b.energy, b.subtotal, b.taxes, b.total, b.previous_total, b.difference, b.computed_at "
        "FROM billing.bill b JOIN config.energy_category c ON c.id = b.category_id "
        "WHERE b.entity_kind = 'tenant' AND b.entity_id = %s AND b.is_current "
        "  AND b.period_start + (b.period_end - b.period_start) / 2 >= %s "
        "  AND b.period_start + (b.period_end - b.period_start) / 2 < %s "
        "ORDER BY c.name, b.period_start", (tenant_id, start, end)).fetchall()
    lines = conn.execute(
        "SELECT bill_id, line_no, kind, description, quantity, unit, rate, amount, period, tier, "
        "       segment_start, segment_end FROM billing.bill_line WHERE bill_id = ANY (%s) "
        "ORDER BY bill_id, line_no", ([b[0] for b in bills],)).fetchall()
    by_bill: dict[int, list[dict]] = {}
    for ln in lines:
        by_bill.setdefault(ln[0], []).append({
            "line_no": ln[1], "kind": ln[2], "description": ln[3], "quantity": float(ln[4]), "unit": ln[5],
            "rate": float(ln[6]), "amount": float(ln[7]), "period": ln[8], "tier": ln[9],
            "segment_start": ln[10], "segment_end": ln[11]})
    out = []
    for b in bills:
        out.append({"id": b[0], "category": b[1], "energy_unit": b[2], "currency": b[3], "period_start": b[4],
                    "period_end": b[5], "status": b[6], "revision": b[7], "energy": float(b[8]),
                    "subtotal": float(b[9]), "taxes": float(b[10]), "total": float(b[11]),
                    "previous_total": None if b[12] is None else float(b[12]),
                    "difference": None if b[13] is None else float(b[13]), "computed_at": b[14],
                    "lines": by_bill.get(b[0], [])})
    currencies = sorted({b["currency"] for b in out})
    return {"tenant": tenant, "month": month, "timezone": zone, "bills": out, "currencies": currencies,
            "total": sum(b["total"] for b in out) if len(currencies) <= 1 else None}


def _local(t: dt.datetime, zone: str) -> dt.datetime:
    return t.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def xlsx(bill: dict[str, Any]) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = "Bill"
    bold = Font(bold=True)
    t = bill["tenant"]
    ws.append([f"Tenant bill: {t['name']}", None])
    ws["A1"].font = Font(bold=True, size=14)
    ws.append(["Month", bill["month"]])
    ws.append(["Time zone", bill["timezone"]])
    ws.append([])
    header = ["Category", "Period start", "Period end", "Line", "Kind", "Description", "Quantity", "Unit",
              "Rate", "Amount", "Currency"]
    ws.append(header)
    for c in ws[ws.max_row]:
        c.font = bold
    for b in bill["bills"]:
        for ln in b["lines"]:
            ws.append([b["category"], _local(b["period_start"], bill["timezone"]),
                       _local(b["period_end"], bill["timezone"]), ln["line_no"], ln["kind"], ln["description"],
                       ln["quantity"], ln["unit"], ln["rate"], ln["amount"], b["currency"]])
        ws.append([b["category"], None, None, None, "total", f"{b['status']} bill, revision {b['revision']}",
                   b["energy"], b["energy_unit"], None, b["total"], b["currency"]])
        ws[ws.max_row][9].font = bold
    ws.append(["Total", None, None, None, None, None, None, None, None, bill["total"],
               "/".join(bill["currencies"])])
    for c in ws[ws.max_row]:
        c.font = bold
    for col, width in zip("ABCDEFGHIJK", (14, 18, 18, 6, 12, 50, 12, 8, 10, 12, 9)):
        ws.column_dimensions[col].width = width
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def pdf(bill: dict[str, Any]) -> bytes:
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    from app.reports.export_plotly import _latin

    doc = FPDF(format="A4")
    doc.add_page()
    doc.set_font("Helvetica", "B", 15)
    doc.cell(0, 9, _latin(f"Tenant bill: {bill['tenant']['name']} - {bill['month']}"), new_x="LMARGIN", new_y="NEXT")
    doc.set_font("Helvetica", size=8)
    for b in bill["bills"]:
        doc.ln(2)
        doc.set_font("Helvetica", "B", 10)
        doc.cell(0, 7, _latin(f"{b['category']}: {_local(b['period_start'], bill['timezone']):%Y-%m-%d} - "
                              f"{_local(b['period_end'], bill['timezone']):%Y-%m-%d} ({b['status']}, "
                              f"revision {b['revision']})"), new_x="LMARGIN", new_y="NEXT")
        doc.set_font("Helvetica", size=8)
        with doc.table(col_widths=(70, 25, 15, 25, 25), headings_style=FontFace(emphasis="BOLD")) as table:
            table.row(["Description", "Quantity", "Unit", "Rate", f"Amount ({b['currency']})"])
            for ln in b["lines"]:
                table.row([_latin(ln["description"]), f"{ln['quantity']:,.3f}", _latin(ln["unit"]),
                           f"{ln['rate']:,.5f}", f"{ln['amount']:,.2f}"])
            table.row(["Total", f"{b['energy']:,.3f}", _latin(b["energy_unit"]), "", f"{b['total']:,.2f}"])
    doc.ln(3)
    doc.set_font("Helvetica", "B", 11)
    total = "-" if bill["total"] is None else f"{bill['total']:,.2f} {'/'.join(bill['currencies'])}"
    doc.cell(0, 8, f"Total: {total}", new_x="LMARGIN", new_y="NEXT")
    return bytes(doc.output())
