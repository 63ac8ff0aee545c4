"""Reports: one engine (engine.py) over the rollups for every entity, metric and
granularity; metrics as definitions (metrics.py); validated parameters (params.py);
exports to Excel (export_xlsx.py), plotly HTML/PNG and PDF (export_plotly.py); the
energy-flow Sankey (sankey.py) and tenant bills (tenant_bill.py). docs/reports.md."""

from app.reports.engine import Forbidden, NotFound, ReportError, Unavailable, build
from app.reports.metrics import METRICS
from app.reports.params import ParamError, ReportParams, parse

__all__ = ["METRICS", "Forbidden", "NotFound", "ParamError", "ReportError", "ReportParams", "Unavailable",
           "build", "parse"]
