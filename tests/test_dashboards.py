"""Every Grafana dashboard, proven against the demo site without a Grafana: the JSON's
structure and its data source references against the provisioning, then every variable
and panel query expanded the way Grafana expands it (tests/grafana_macros.py) and run as
the read-only role wattline_reader on a database holding the demo site, two weeks of
simulated 5-minute readings through the whole pipeline, carbon factors and some
operations rows.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml

from app import PROJECT_ROOT
from grafana_macros import ALL, TimeRange, Variable, calculate_interval, expand, metric_find_values

GRAFANA = PROJECT_ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "wattline.yaml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "wattline.yaml"
DAYS = 14
UTC = dt.timezone.utc

# Panels that may return no rows on the demo data, and why. Every other panel must
# return rows.
MAY_BE_EMPTY = {
    ("wattline-meter", "Flagged intervals (anything but 'measured')"):
        "clean, regular 5-minute readings give only 'measured' intervals",
}



def load(path: Path) -> dict:
    return json.loads(path.read_text())


def provisioned_datasource() -> dict:
    doc = yaml.safe_load(DATASOURCES.read_text())
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    return ds


def panels(board: dict) -> list[dict]:
    """Every panel, including those inside collapsed rows."""
    out = []
    for p in board.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


# --------------------------------------------------------------- structure
def test_every_issue_dashboard_exists():
    uids = {load(p)["uid"] for p in DASHBOARDS}
    assert uids == {"wattline-portfolio", "wattline-space", "wattline-meter", "wattline-tenants",
                    "wattline-carbon", "wattline-operations", "wattline-live"}


def test_provisioning_files():
    ds = provisioned_datasource()
    assert ds["type"] == "grafana-postgresql-datasource" and ds["uid"] == "wattline"
    assert ds["jsonData"]["timescaledb"] is True and ds["jsonData"]["postgresVersion"] >= 1500
    assert ds["editable"] is False and ds["secureJsonData"]["password"] == "${WATTLINE_GRAFANA_DB_PASSWORD}"
    used = set(re.findall(r"\$\{(\w+)\}", DATASOURCES.read_text()))
    assert used == {"WATTLINE_GRAFANA_DB_HOST", "WATTLINE_GRAFANA_DB_PORT", "WATTLINE_GRAFANA_DB_NAME",
                    "WATTLINE_GRAFANA_DB_USER", "WATTLINE_GRAFANA_DB_PASSWORD", "WATTLINE_GRAFANA_DB_SSLMODE"}
    readme = (GRAFANA / "README.md").read_text()
    assert all(name in readme for name in used), "grafana/README.md documents every variable"
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_structure(path: Path):
    board = load(path)
    ds = provisioned_datasource()
    ref = {"type": ds["type"], "uid": ds["uid"]}
    assert board["uid"].startswith("wattline-") and board["title"] and board["schemaVersion"] >= 36
    all_panels = panels(board)
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    names = [v["name"] for v in board["templating"]["list"]]
    assert len(names) == len(set(names)), "variable names are unique"
    for v in board["templating"]["list"]:
        assert v["type"] == "query" and v["datasource"] == ref and v["query"].strip()
    for p in all_panels:
        where = f"{path.name} panel {p['id']} {p['title']!r}"
        g = p.get("gridPos")
        assert g and all(isinstance(g[k], int) for k in "hwxy"), where
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, where
        if p["type"] == "row":
            continue
        assert p["datasource"] == ref, where
        refids = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refids) == len(set(refids)), where
        for t in p["targets"]:
            assert t.get("datasource", ref) == ref, where
            assert t["format"] in ("table", "time_series") and t["rawSql"].strip(), where
            assert t.get("rawQuery") is True, where


def test_panels_read_only_api_views():
    """No query names a schema other than api (pg_catalog and functions aside)."""
    for path in DASHBOARDS:
        board = load(path)
        sqls = [v["query"] for v in board["templating"]["list"]]
        sqls += [t["rawSql"] for p in panels(board) for t in p.get("targets", [])]
        for sql in sqls:
            schemas = set(re.findall(r"\b(config|raw|energy|billing|carbon|ops)\.\w+", sql))
            assert not schemas, f"{path.name}: {schemas} in {sql[:80]}"


# ------------------------------------------------------------ demo database
@pytest.fixture(scope="module")
def demo(server_url, template_db, dropper):
    """A database with the demo (tariffs, site, emission factors), 14 days of simulated
    readings up to now through every pipeline stage, and operations rows. Yields (url, time range)."""
    from app.demo import load_demo
    from collectors.simulator import backfill_history
    from jobs import runner

    name = f"wattline_test_dash_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = server_url.rsplit("/", 1)[0] + "/" + name
    try:
        load_demo(url)
        now = dt.datetime.now(UTC)
        end = dt.datetime.fromtimestamp(now.timestamp() // 300 * 300, UTC)
        start = end - dt.timedelta(days=DAYS)
        with psycopg.connect(url, autocommit=True) as conn:
            zone = conn.execute("SELECT reporting_timezone FROM energy.rollup_setting").fetchone()[0]
        backfill_history(url, DAYS, dt.timedelta(minutes=5), zone, end=end)
        with psycopg.connect(url, autocommit=True) as conn:
            stages = runner.load_pipeline()
            for extra in ("billing", "carbon"):   # stages not (yet) in the runner's list
                if extra not in {s.NAME for s in stages}:
                    try:
                        stages.append(runner.load_stage(extra))
                    except runner.UnknownStage:
                        pass
            runner.backfill(conn, start, end + dt.timedelta(minutes=15), chunk=dt.timedelta(days=7), stages=stages)
            runner.run_pipeline(conn, stages=stages)   # incremental: stage cursors exist
            _operations_rows(conn)
        yield url, TimeRange(start, dt.datetime.now(UTC))
    finally:
        dropper.drop(server_url, name)


def _operations_rows(conn: psycopg.Connection) -> None:
    """Collector status (one source failing), dead letters, and a late reading that leaves
    recomputation pending."""
    from app.readings import write_readings

    sources = dict(conn.execute("SELECT name, id FROM config.data_source").fetchall())
    conn.execute(
        "INSERT INTO ops.collector_status (data_source_id, point_id, last_success, consecutive_failures) "
        "SELECT id, 0, now() - interval '20 seconds', 0 FROM config.data_source WHERE name <> 'mqtt-water'")
    conn.execute(
        "INSERT INTO ops.collector_status (data_source_id, point_id, last_success, last_error, last_error_at, "
        "consecutive_failures) VALUES (%s, 0, now() - interval '2 hours', 'connection refused', now(), 12)",
        (sources["mqtt-water"],))
    conn.execute(
        "INSERT INTO ops.dead_letter (data_source_id, topic, payload, reason) VALUES "
        "(%s, 'wattline/demo/water/x', '{\"key\": \"unknown\"}', 'no point with key unknown'), "
        "(%s, 'wattline/demo/water/y', 'not json', 'payload is not JSON')",
        (sources["mqtt-water"], sources["mqtt-water"]))
    point, ts = conn.execute(
        "SELECT point_id, min(ts) + interval '1 minute' FROM raw.point_value GROUP BY point_id LIMIT 1").fetchone()
    with conn.transaction():
        write_readings(conn, [(point, ts, 1.0, 0)])


# ------------------------------------------------------------------ running
def _run(conn: psycopg.Connection, sql: str):
    cur = conn.execute(sql)
    return [c.name for c in cur.description], cur.fetchall()


def resolve_variables(conn, board: dict, rng: TimeRange) -> dict[str, Variable]:
    """Each variable's own query first, in order (later ones may use earlier ones), then
    the value Grafana starts with: All when offered, else the first option."""
    resolved: dict[str, Variable] = {}
    interval = calculate_interval(rng, 1000, "1m")
    for v in board["templating"]["list"]:
        sql = expand(v["query"], rng, interval, resolved)
        cols, rows = _run(conn, sql)
        values = [value for _, value in metric_find_values(rows, cols)]
        assert values, f"variable {v['name']} has no options: {sql}"
        if v.get("includeAll"):
            current = [ALL] if v.get("multi") else ALL
        else:
            current = [values[0]] if v.get("multi") else values[0]
        resolved[v["name"]] = Variable(v["name"], current, multi=v.get("multi", False),
                                       include_all=v.get("includeAll", False), all_value=v.get("allValue"),
                                       options=values)
    return resolved


def _numeric(value) -> bool:
    import decimal

    return value is None or isinstance(value, (int, float, decimal.Decimal))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_runs_as_the_reader_and_returns_data(demo, path: Path):
    url, rng = demo
    board = load(path)
    failures, empty = [], []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET ROLE wattline_reader")
        conn.execute("SET default_transaction_read_only = on")
        variables = resolve_variables(conn, board, rng)
        for p in panels(board):
            if p["type"] == "row":
                continue
            interval = calculate_interval(rng, p.get("maxDataPoints", 1000), p.get("interval") or "1m")
            rows_seen = 0
            for t in p["targets"]:
                variants = [True, False] if "$__timeGroup" in t["rawSql"] else [True]
                for timescaledb in variants:
                    sql = expand(t["rawSql"], rng, interval, variables, timescaledb=timescaledb)
                    try:
                        cols, rows = _run(conn, sql)
                    except psycopg.Error as exc:
                        failures.append(f"{p['title']!r} {t['refId']}: {exc.__class__.__name__}: {exc}\n{sql}")
                        continue
                    rows_seen += len(rows)
                    if t["format"] == "time_series" and rows:
                        problem = _time_series_problem(cols, rows)
                        if problem:
                            failures.append(f"{p['title']!r} {t['refId']}: {problem}")
            if not rows_seen and (board["uid"], p["title"]) not in MAY_BE_EMPTY:
                empty.append(p["title"])
    assert not failures, "\n\n".join(failures)
    assert not empty, f"{path.name}: panels without data on the demo: {empty}"


def _time_series_problem(cols: list[str], rows: list[tuple]) -> str | None:
    """What Grafana's SQL engine would reject or mis-draw in a time_series result."""
    if "time" not in cols:
        return f"no 'time' column in {cols}"
    ti = cols.index("time")
    times = [r[ti] for r in rows]
    # A timestamp, or epoch seconds (what $__timeGroup gives without TimescaleDB): Grafana
    # converts both.
    if any(not (isinstance(x, dt.datetime) or (_numeric(x) and x is not None)) for x in times):
        return "'time' is neither a timestamp nor epoch seconds"
    if times != sorted(times):
        return "rows are not ordered by time"
    for i, c in enumerate(cols):
        if c in ("time", "metric"):
            continue
        if not all(_numeric(r[i]) for r in rows):
            return f"value column {c!r} is not numeric"
    return None


def test_reader_cannot_bypass_the_api_schema(demo):
    url, _ = demo
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET ROLE wattline_reader")
        for table in ("raw.point_value", "energy.meter_interval", "config.meter", "ops.job_run", "carbon.meter_emission"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT 1 FROM {table} LIMIT 1")
