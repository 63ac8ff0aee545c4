"""Reports, the energy-flow Sankey and tenant bills: one controller over one engine.

GET /api/v1/reports/{metric}     any entity, metric, granularity, period, breakdown and
                                 comparison, as JSON, xlsx, html, png or pdf
GET /api/v1/reports/sankey       energy flow of a space (JSON, html, png)
GET /api/v1/tenants/{id}/bill    a tenant's bill for a month (JSON, xlsx, pdf)

Each handler validates through app.reports.params, borrows a pooled connection for the
engine's few queries, releases it, then renders. The caller's data scope (the `principal`
dependency's `.scope`, app.scopes.DataScope) reaches the engine, which answers 403 outside it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter
from litestar.response import Stream

from app.api.database import Database
from app.api.security import Principal, requires_scope
from app.api.problems import problem
from app.api.report_schemas import XLSX, Report, Sankey, TenantBill, export_formats
from app.reports import engine, params as report_params, sankey, tenant_bill
from app.reports.metrics import METRICS
from app.settings import get_settings

MetricName = Literal["energy", "cost", "carbon", "carbon-market", "efficiency"]
EntityKind = Literal["space", "equipment", "combined_equipment", "tenant", "store", "shopfloor", "meter",
                     "cost_center"]
Granularity = Literal["15min", "hour", "day", "week", "month", "year"]
Breakdown = Literal["category", "item", "child", "tou_period"]
Comparison = Literal["previous", "last_year"]
ReportFormat = Literal["json", "xlsx", "html", "png", "pdf"]

FROM_DOC = ("Start, in the reporting time zone: a date (2025-03-01) or date-time (2025-03-01T06:00); "
            "inclusive. The period is widened outward to whole buckets.")
TO_DOC = ("End, in the reporting time zone: a date means through the end of that day; a date-time is "
          "exclusive.")


def _problem(exc: Exception):
    if isinstance(exc, report_params.ParamError):
        return problem(422, "invalid-parameter", "Invalid parameter", exc.message, field=exc.field)
    if isinstance(exc, engine.ReportError):
        extra = {"field": exc.field} if exc.field else {}
        return problem(exc.status, exc.kind, exc.title, exc.detail, **extra)
    raise exc


def _attachment(name: str, ext: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}.{ext}"'}


def _render(report: dict[str, Any], fmt: str, name: str) -> Response:
    from app.reports import export_plotly, export_xlsx

    if fmt == "xlsx":
        path = export_xlsx.render_to_file(report)
        return Stream(export_xlsx.stream_file(path), media_type=XLSX, headers=_attachment(name, "xlsx"))
    if fmt == "html":
        return Response(export_plotly.html(report), media_type="text/html")
    if fmt == "png":
        return Response(export_plotly.png(report), media_type="image/png")
    if fmt == "pdf":
        return Response(export_plotly.pdf(report), media_type="application/pdf",
                        headers=_attachment(name, "pdf"))
    return Response(report)


class ReportController(Controller):
    path = "/api/v1"
    guards = [requires_scope("read")]
    tags = ["reports"]

    @get("/reports/sankey", operation_id="getEnergyFlowSankey", sync_to_thread=True,
         operation_class=export_formats("html", "png"),
         summary="Energy-flow Sankey of a space: master meters → sub-meters → equipment, losses",
         description="Meters linked to the space and its sub-spaces; what a master meter measured beyond "
                     "its sub-meters shows as a losses / unmetered node. format=json|html|png.")
    def sankey(
        self, database: NamedDependency[Database], principal: NamedDependency[Principal],
        space_id: Annotated[int, QueryParameter(name="id", ge=1, description="The space's id")],
        from_: Annotated[str, QueryParameter(name="from", description=FROM_DOC)],
        to: Annotated[str, QueryParameter(description=TO_DOC)],
        format: Annotated[Literal["json", "html", "png"], QueryParameter(description="Output format")] = "json",
    ) -> Response[Sankey]:
        try:
            zone = get_settings().reporting_timezone
            from zoneinfo import ZoneInfo

            start = report_params.parse_instant("from", from_, ZoneInfo(zone))
            end = report_params.parse_instant("to", to, ZoneInfo(zone), end=True)
            if start >= end:
                raise report_params.ParamError("to", "must be after from")
            with database.connection() as conn:
                flow = sankey.build(conn, space_id, start, end, principal.scope)
        except (report_params.ParamError, engine.ReportError) as exc:
            raise _problem(exc) from None
        if format == "html":
            return Response(sankey.html(flow), media_type="text/html")
        if format == "png":
            return Response(sankey.png(flow), media_type="image/png")
        return Response(flow)

    @get("/reports/{metric:str}", operation_id="getReport", sync_to_thread=True,
         operation_class=export_formats("xlsx", "html", "png", "pdf"),
         summary="Report any metric for any entity, granularity and period",
         description="One engine for every report: series with missing buckets as null, totals, per-m² "
                     "intensity, peak and base load, change against a comparison period and data "
                     "completeness. Reads the coarsest rollup that fits. format=xlsx|html|png|pdf "
                     "exports the same report. See docs/reports.md.")
    def report(
        self, database: NamedDependency[Database], principal: NamedDependency[Principal],
        metric: Annotated[MetricName, PathParameter(description="energy, cost, carbon (location-based), "
                                                                "carbon-market, efficiency")],
        entity: Annotated[EntityKind, QueryParameter(description="Entity kind")],
        entity_id: Annotated[int, QueryParameter(name="id", ge=1, description="The entity's id")],
        from_: Annotated[str, QueryParameter(name="from", description=FROM_DOC)],
        to: Annotated[str, QueryParameter(description=TO_DOC)],
        granularity: Annotated[Granularity, QueryParameter(description="Bucket size")] = "day",
        by: Annotated[Breakdown | None, QueryParameter(description="Breakdown")] = None,
        compare: Annotated[Comparison | None, QueryParameter(description="Comparison period")] = None,
        unit: Annotated[Literal["native", "kgce"], QueryParameter(
            description="native: the category's unit; kgce: kg coal equivalent (energy)")] = "native",
        category: Annotated[str | None, QueryParameter(description="Energy category id or name")] = None,
        format: Annotated[ReportFormat, QueryParameter(description="Output format")] = "json",
    ) -> Response[Report]:
        try:
            p = report_params.parse(
                metric=metric, entity=entity, entity_id=entity_id, granularity=granularity, start=from_,
                end=to, zone=get_settings().reporting_timezone, by=by, compare=compare, unit=unit,
                category=category, format=format, known_metrics=tuple(METRICS))
            with database.connection() as conn:
                report = engine.build(conn, p, principal.scope)
        except (report_params.ParamError, engine.ReportError) as exc:
            raise _problem(exc) from None
        name = f"{p.metric}-{p.entity}-{p.entity_id}-{p.start:%Y%m%d}"
        return _render(report, p.format, name)

    @get("/tenants/{tenant_id:int}/bill", operation_id="getTenantBill", sync_to_thread=True,
         operation_class=export_formats("xlsx", "pdf"),
         summary="A tenant's bill for one month (format=json|xlsx|pdf)",
         description="The tenant's current bills whose billing period falls mostly in the month of the "
                     "reporting time zone, one per energy category, with every line.")
    def tenant_bill(
        self, database: NamedDependency[Database], principal: NamedDependency[Principal],
        tenant_id: Annotated[int, PathParameter(ge=1, description="The tenant's id")],
        month: Annotated[str, QueryParameter(description="YYYY-MM", pattern=r"^\d{4}-\d{2}$")],
        format: Annotated[Literal["json", "xlsx", "pdf"], QueryParameter(description="Output format")] = "json",
    ) -> Response[TenantBill]:
        try:
            with database.connection() as conn:
                bill = tenant_bill.build(conn, tenant_id, month, principal.scope)
        except (report_params.ParamError, engine.ReportError) as exc:
            raise _problem(exc) from None
        name = f"bill-tenant-{tenant_id}-{month}"
        if format == "xlsx":
            return Response(tenant_bill.xlsx(bill), media_type=XLSX, headers=_attachment(name, "xlsx"))
        if format == "pdf":
            return Response(tenant_bill.pdf(bill), media_type="application/pdf", headers=_attachment(name, "pdf"))
        return Response(bill)
