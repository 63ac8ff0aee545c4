"""The report routes' documented JSON shape (OpenAPI components Report and Sankey) holds
for real reports: every metric shape (plain, breakdown, comparison, ratio) and the Sankey
are validated against the app's own schema. The other formats are documented too."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from app.api import create_app
from app.apikeys import issue_key
from test_reports import site  # noqa: F401 -- the fixture: a small site with a month of data


@pytest.fixture
def client(db_url, conn, site):  # noqa: F811
    key = issue_key(conn, "schema", ["read"]).secret
    with TestClient(app=create_app(db_url)) as c:
        c.headers["X-API-Key"] = key
        yield c


@pytest.fixture
def openapi(client):
    r = client.get("/api/docs/openapi.json")
    assert r.status_code == 200
    return r.json()


def validate(openapi: dict, component: str, body: dict) -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")   # comes with schemathesis
    schema = {"$ref": f"#/components/schemas/{component}", "components": openapi["components"]}
    jsonschema_rs.Draft202012Validator(schema, validate_formats=True).validate(body)


def test_report_responses_match_the_documented_schema(client, openapi, site):  # noqa: F811
    space = {"entity": "space", "id": site["Site"], "from": "2025-03-24", "to": "2025-04-06",
             "category": "electricity"}
    cases = [
        ("energy", space),
        ("energy", {**space, "by": "child", "compare": "previous"}),
        ("energy", {**space, "by": "item", "granularity": "hour", "to": "2025-03-25"}),
        ("energy", {**space, "unit": "kgce", "granularity": "month", "category": None}),
        ("efficiency", {"entity": "equipment", "id": site["Chiller"], "from": "2025-03-24", "to": "2025-03-30"}),
        ("energy", {"entity": "tenant", "id": site["Tenant"], "from": "2025-03-24", "to": "2025-03-30",
                    "granularity": "week", "compare": "last_year"}),
    ]
    for metric, query in cases:
        r = client.get(f"/api/v1/reports/{metric}", params=query)
        assert r.status_code == 200, (metric, query, r.text)
        assert r.headers["content-type"].startswith("application/json")
        validate(openapi, "Report", r.json())


def test_the_sankey_matches_the_documented_schema(client, openapi, site):  # noqa: F811
    r = client.get("/api/v1/reports/sankey", params={"id": site["Site"], "from": "2025-03-24", "to": "2025-03-30"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["links"]
    validate(openapi, "Sankey", body)


def test_the_schema_documents_every_format_and_a_shape_not_an_empty_object(openapi):
    report = openapi["paths"]["/api/v1/reports/{metric}"]["get"]["responses"]["200"]["content"]
    assert report["application/json"]["schema"] == {"$ref": "#/components/schemas/Report"}
    assert {"text/html", "image/png", "application/pdf",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"} <= set(report)
    sankey = openapi["paths"]["/api/v1/reports/sankey"]["get"]["responses"]["200"]["content"]
    assert sankey["application/json"]["schema"] == {"$ref": "#/components/schemas/Sankey"}
    assert {"text/html", "image/png"} <= set(sankey)
    bill = openapi["paths"]["/api/v1/tenants/{tenant_id}/bill"]["get"]["responses"]["200"]["content"]
    assert bill["application/json"]["schema"] == {"$ref": "#/components/schemas/TenantBill"}
    required = set(openapi["components"]["schemas"]["Report"]["required"])
    assert {"series", "totals", "completeness", "period", "entity"} <= required
    names = [p["name"] for p in openapi["paths"]["/api/v1/reports/{metric}"]["get"]["parameters"]]
    assert {"id", "from", "to"} <= set(names) and "from_" not in names and "entity_id" not in names
