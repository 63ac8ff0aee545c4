"""The JSON shapes of the report routes, for the OpenAPI schema (docs/reports.md says what
each field means). The engine (app.reports) builds plain dicts; these types only
document them — the handlers return the engine's dicts as they are, so a field the engine
adds later appears in the answer before it appears here (the objects allow it).

The other formats (xlsx, html, png, pdf) are documented as binary or text bodies of the
same 200 answer through `ExportFormats`, an Operation class for the route decorators.

(No `from __future__ import annotations`: TypedDict must see NotRequired itself.)
"""

import datetime as dt
from dataclasses import dataclass
from typing import NotRequired, TypedDict

from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Schema


class ReportEntity(TypedDict):
    kind: str
    id: int
    name: str
    area_m2: float | None


ReportPeriod = TypedDict("ReportPeriod", {
    "from": dt.datetime, "to": dt.datetime, "requested_from": dt.datetime, "requested_to": dt.datetime,
})


class ReportPoint(TypedDict):
    bucket: dt.datetime
    value: float | None                      # null: no data in the bucket
    expected: int                            # 15-minute intervals expected (meters × intervals)
    present: int                             # of which have a value
    groups: NotRequired[dict[str, float]]    # with a breakdown: the bucket's value per group


class ReportTotals(TypedDict):
    value: float | None
    input: float | None                      # ratio metrics (efficiency): the input total
    output: float | None                     # … and the output total
    expected: int
    present: int
    completeness: float | None


class BreakdownGroup(TypedDict):
    key: str
    value: float
    share: float | None


class ReportBreakdown(TypedDict):
    by: str
    groups: list[BreakdownGroup]


class ReportIntensity(TypedDict):
    value: float
    unit: str
    area_m2: float


class ReportLoad(TypedDict):
    peak_kw: float | None
    peak_at: dt.datetime | None
    base_kw: float | None
    resolution: str
    meters: int
    definition: str


class ComparisonPoint(TypedDict):
    bucket: dt.datetime
    value: float | None


ReportComparison = TypedDict("ReportComparison", {
    "kind": str, "from": dt.datetime, "to": dt.datetime, "total": float | None, "change": float | None,
    "change_pct": float | None, "completeness": float | None, "series": list[ComparisonPoint],
})


class ReportCompleteness(TypedDict):
    expected: int
    present: int
    ratio: float | None
    definition: str


class Report(TypedDict):
    """A report (format=json): its series, totals and the figures derived from them."""

    metric: str
    title: str
    unit: str
    entity: ReportEntity
    granularity: str
    timezone: str
    period: ReportPeriod
    source: str
    meters: int
    series: list[ReportPoint]
    totals: ReportTotals
    breakdown: ReportBreakdown | None
    intensity: ReportIntensity | None
    load: ReportLoad | None
    comparison: ReportComparison | None
    completeness: ReportCompleteness


class SankeyNode(TypedDict):
    label: str
    kind: str                                # meter, equipment, losses
    category: str


class SankeyLink(TypedDict):
    source: int                              # index into nodes
    target: int
    value: float
    unit: str


SankeyPeriod = TypedDict("SankeyPeriod", {"from": dt.datetime, "to": dt.datetime})


class Sankey(TypedDict):
    """Energy flow of a space (format=json)."""

    entity: ReportEntity
    timezone: str
    period: SankeyPeriod
    nodes: list[SankeyNode]
    links: list[SankeyLink]


class BillLine(TypedDict):
    line_no: int
    kind: str
    description: str
    quantity: float
    unit: str
    rate: float
    amount: float
    period: int | None
    tier: int | None
    segment_start: dt.datetime
    segment_end: dt.datetime


class Bill(TypedDict):
    id: int
    category: str
    energy_unit: str
    currency: str
    period_start: dt.datetime
    period_end: dt.datetime
    status: str
    revision: int
    energy: float
    subtotal: float
    taxes: float
    total: float
    previous_total: float | None
    difference: float | None
    computed_at: dt.datetime | None
    lines: list[BillLine]


class TenantBill(TypedDict):
    """A tenant's bills for a month (format=json)."""

    tenant: ReportEntity
    month: str
    timezone: str
    bills: list[Bill]
    currencies: list[str]
    total: float | None                      # null when the bills are in several currencies


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_BINARY = Schema(type=OpenAPIType.STRING, format="binary")
_TEXT = Schema(type=OpenAPIType.STRING)
EXPORT_MEDIA = {"xlsx": (XLSX, _BINARY), "html": ("text/html", _TEXT), "png": ("image/png", _BINARY),
                "pdf": ("application/pdf", _BINARY)}


def export_formats(*formats: str) -> type[Operation]:
    """An Operation class adding the `format=` exports to the 200 answer's content types."""

    @dataclass
    class ExportFormats(Operation):
        def __post_init__(self) -> None:
            ok = (self.responses or {}).get("200")
            content = getattr(ok, "content", None)
            if content is not None:
                for f in formats:
                    media, schema = EXPORT_MEDIA[f]
                    content.setdefault(media, OpenAPIMediaType(schema=schema))

    return ExportFormats
