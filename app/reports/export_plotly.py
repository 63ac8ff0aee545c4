"""plotly exports of any report: interactive HTML, PNG (kaleido driving headless
Chromium) and PDF (fpdf2: summary, the chart image and the detail table).

Images: one Chromium is kept for the process (kaleido's sync server, started on first
use) and renders one image at a time, so a burst of PNG/PDF requests queues instead of
starting a browser per request.
"""

from __future__ import annotations

import datetime as dt
import html as htmllib
import threading
import warnings
from typing import Any
from zoneinfo import ZoneInfo

import plotly.graph_objects as go
from plotly.subplots import make_subplots

_render_lock = threading.Lock()
_server_started = False


def _local(t: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    return t.astimezone(zone).replace(tzinfo=None)


def figure(report: dict[str, Any]) -> go.Figure:
    """The series (and comparison) as a line chart, with the breakdown as a pie beside it."""
    zone = ZoneInfo(report["timezone"])
    x = [_local(p["bucket"], zone) for p in report["series"]]
    breakdown = report["breakdown"]
    if breakdown and breakdown["groups"]:
        fig = make_subplots(rows=1, cols=2, column_widths=[0.68, 0.32],
                            specs=[[{"type": "xy"}, {"type": "domain"}]],
                            subplot_titles=(f"{report['title']} per {report['granularity']}",
                                            f"by {breakdown['by']}"))
        fig.add_trace(go.Pie(labels=[g["key"] for g in breakdown["groups"]],
                             values=[g["value"] for g in breakdown["groups"]], name="breakdown"), row=1, col=2)
    else:
        fig = make_subplots(rows=1, cols=1)
    fig.add_trace(go.Scatter(x=x, y=[p["value"] for p in report["series"]], mode="lines+markers",
                             name=report["title"], connectgaps=False), row=1, col=1)
    if report["comparison"]:
        c = report["comparison"]
        fig.add_trace(go.Scatter(x=x[:len(c["series"])], y=[p["value"] for p in c["series"]],
                                 mode="lines", line={"dash": "dot"}, name=f"comparison ({c['kind']})"),
                      row=1, col=1)
    e = report["entity"]
    fig.update_layout(title=f"{report['title']}: {e['name']} ({report['unit']}, {report['timezone']})",
                      template="plotly_white", legend={"orientation": "h"})
    fig.update_yaxes(title_text=report["unit"], row=1, col=1)
    return fig


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    zone = ZoneInfo(report["timezone"])
    t, unit = report["totals"], report["unit"]

    def fmt(v: Any, digits: int = 3) -> str:
        return "–" if v is None else f"{v:,.{digits}f}"

    rows = [
        ("Entity", f"{report['entity']['kind']} {report['entity']['id']}: {report['entity']['name']}"),
        ("Period", f"{_local(report['period']['from'], zone):%Y-%m-%d %H:%M} – "
                   f"{_local(report['period']['to'], zone):%Y-%m-%d %H:%M} ({report['timezone']})"),
        ("Granularity", report["granularity"]),
        (f"Total ({unit})", fmt(t["value"])),
        ("Completeness", "–" if t["completeness"] is None else f"{t['completeness']:.2%}"),
    ]
    if report["intensity"]:
        rows.append((f"Intensity ({report['intensity']['unit']})", fmt(report["intensity"]["value"], 4)))
    if report["load"]:
        rows.append((f"Peak / base load (kW, {report['load']['resolution']})",
                     f"{fmt(report['load']['peak_kw'])} / {fmt(report['load']['base_kw'])}"))
    if report["comparison"]:
        c = report["comparison"]
        rows.append((f"Comparison ({c['kind']})", f"{fmt(c['total'])}, change {fmt(c['change_pct'], 2)} %"))
    return rows


def html(report: dict[str, Any]) -> str:
    """A self-contained interactive page (plotly.js inlined, so it works offline)."""
    fig = figure(report)
    rows = "".join(f"<tr><th>{htmllib.escape(k)}</th><td>{htmllib.escape(v)}</td></tr>"
                   for k, v in summary_rows(report))
    title = htmllib.escape(f"{report['title']} report: {report['entity']['name']}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
            "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:2em}</style>"
            f"</head><body><h1>{title}</h1><table>{rows}</table>"
            f"{fig.to_html(full_html=False, include_plotlyjs=True)}</body></html>")


def _image(fig: go.Figure, fmt: str, width: int, height: int) -> bytes:
    global _server_started
    with _render_lock:
        if not _server_started:
            try:
                import kaleido

                kaleido.start_sync_server(silence_warnings=True)
            except Exception:  # older kaleido or already running: per-call browser
                pass
            _server_started = True
        with warnings.catch_warnings():  # "kopts ignored when using a server": expected here
            warnings.simplefilter("ignore", UserWarning)
            return fig.to_image(format=fmt, width=width, height=height)


def png(report: dict[str, Any], width: int = 1200, height: int = 500) -> bytes:
    return _image(figure(report), "png", width, height)


def pdf(report: dict[str, Any]) -> bytes:
    """Summary, the chart and the detail table, A4 landscape."""
    from fpdf import FPDF
    from fpdf.fonts import FontFace
    import io

    zone = ZoneInfo(report["timezone"])
    image = png(report, width=1400, height=520)
    doc = FPDF(orientation="L", format="A4")
    doc.set_auto_page_break(auto=True, margin=12)
    doc.add_page()
    doc.set_font("Helvetica", "B", 15)
    doc.cell(0, 9, _latin(f"{report['title']} report: {report['entity']['name']}"),
             new_x="LMARGIN", new_y="NEXT")
    doc.set_font("Helvetica", size=9)
    with doc.table(col_widths=(60, 160), first_row_as_headings=False, width=220, align="LEFT") as table:
        for k, v in summary_rows(report):
            row = table.row()
            row.cell(_latin(k), style=FontFace(emphasis="BOLD"))
            row.cell(_latin(v))
    doc.ln(3)
    doc.image(io.BytesIO(image), w=doc.epw)
    doc.add_page()
    doc.set_font("Helvetica", "B", 12)
    doc.cell(0, 8, "Detail", new_x="LMARGIN", new_y="NEXT")
    doc.set_font("Helvetica", size=8)
    comparison = report["comparison"]
    headings = ["Bucket (local)", f"Value ({report['unit']})"] + (["Comparison"] if comparison else []) + \
        ["Expected", "Present"]
    with doc.table(headings_style=FontFace(emphasis="BOLD"), text_align="RIGHT") as table:
        table.row([_latin(h) for h in headings])
        cs = comparison["series"] if comparison else []
        for i, p in enumerate(report["series"]):
            cells = [f"{_local(p['bucket'], zone):%Y-%m-%d %H:%M}", _fmt(p["value"])]
            if comparison:
                cells.append(_fmt(cs[i]["value"] if i < len(cs) else None))
            cells += [str(p["expected"]), str(p["present"])]
            table.row(cells)
        t = report["totals"]
        total = ["Total", _fmt(t["value"])] + ([_fmt(comparison["total"])] if comparison else []) + \
            [str(t["expected"]), str(t["present"])]
        table.row(total)
    return bytes(doc.output())


def _fmt(v: Any) -> str:
    return "" if v is None else f"{v:,.3f}"


def _latin(text: str) -> str:
    """The core PDF fonts are Latin-1: replace what they cannot show."""
    return text.replace("–", "-").replace("²", "2").encode("latin-1", "replace").decode("latin-1")
